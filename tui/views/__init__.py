"""Pure data shaping for the TUI's panes: numpy + the `tracer` reading API, no textual, no rich.

Each module turns a `tracer.Trace`, a step index and a selection (layer, head, ...) into the plain
rows or matrices a pane shows, reading only the arrays needed and caching per step.
"""
