"""Status bar: where the debugger stands.

`stepscope │ model │ replay|live │ step 3/15 decode │ chose ·Paris · rank 1 · p 0.42 │ L 5 (0–29) H 2 (0–8) kv 0`
then the state of the session (computing, continuing, stopped at a breakpoint, finished).
The chosen token is shown with `tui.text.display_token` (inert).

Keys: none.
"""

from __future__ import annotations

from rich.text import Text
from textual.reactive import reactive

from stepscope.tracer.geometry import kv_head_of
from stepscope.tracer.inert import inert
from stepscope.tui.render.candidates import chosen_line
from stepscope.tui.widgets.pane import Pane

SPINNER = "⠋⠙⠹⠸⠼⠴⠦⠧⠇⠏"
STATE = 8
"""The note's priority: when the line is too wide the lowest go first; step, then layer and head, stay."""
MIN_STATE = 12
"""Cells the note keeps (cut with an ellipsis) before it gives way."""


class StatusBar(Pane):
    """One line: the trace at the cursor, then `mode` and `state` (set by the app)."""

    COMPONENT_CLASSES = {"status-bar--title", "status-bar--key", "status-bar--state", "status-bar--busy"}

    mode: reactive[str] = reactive("replay")
    state: reactive[str] = reactive("")
    busy: reactive[bool] = reactive(False)
    spin: reactive[int] = reactive(0)

    def on_mount(self) -> None:
        self._timer = self.set_interval(0.12, self._tick, pause=True)

    def watch_busy(self, busy: bool) -> None:
        timer = getattr(self, "_timer", None)
        if timer is not None:
            timer.resume() if busy else timer.pause()

    def _tick(self) -> None:
        self.spin = (self.spin + 1) % len(SPINNER)

    def render(self) -> Text:
        style = self.get_component_rich_style
        trace = self._trace
        # (priority, piece): when the line is too wide the lowest priorities go first
        parts: list[tuple[int, Text]] = [(1, Text(" stepscope ", style=style("status-bar--title")))]
        if trace is not None:
            model = trace.model
            weights = f" · {model['weights']}" if model.get("weights") else ""  # e.g. GGUF Q4_1, dequantised to float32
            parts.append((0, Text(inert(str(model.get("name", "?")) + weights))))
            parts.append((2, Text(self.mode, style=style("status-bar--key"))))
            n_steps = len(trace.steps)
            if n_steps:
                step_index = self.step_index
                entry = trace.manifest["steps"][step_index]
                parts.append((10, Text(f"step {step_index}/{n_steps - 1} {entry.get('kind', '')}")))
                parts.append((7, chosen_line(trace, step_index)))
            n_layers = int(model.get("n_layers") or 0)
            n_heads = int(model.get("n_heads") or 0)
            parts.append((
                9,
                Text(f"L {self.cursor.layer} (0–{max(n_layers - 1, 0)}) H {self.cursor.head} (0–{max(n_heads - 1, 0)}) "
                     f"kv {kv_head_of(model, self.cursor.head)}"),
            ))
        if self.state:
            state = Text()
            if self.busy:
                state.append(SPINNER[self.spin] + " ", style=style("status-bar--busy"))
            state.append(inert(self.state), style=style("status-bar--state"))
            parts.append((STATE, state))
        sep = " │ "
        width = self.size.width or 80
        if _width(parts, sep) > width:  # first the chosen line gives up its tail
            parts = [(prio, _without_raw(piece)) if prio == 7 else (prio, piece) for prio, piece in parts]
        while len(parts) > 1 and _width(parts, sep) > width:
            lowest = min(range(len(parts)), key=lambda i: parts[i][0])
            if parts[lowest][0] == STATE and width - _width(parts[:-1], sep) - len(sep) >= MIN_STATE:
                break  # the note, last, is cut with an ellipsis rather than dropped
            parts.pop(lowest)
        out = Text(no_wrap=True, overflow="ellipsis", end="")
        for i, (_, piece) in enumerate(parts):
            if i and not (i == 1 and parts[0][0] == 1):
                out.append(sep)
            elif i:
                out.append(" ")
            out.append_text(piece)
        return out


def _width(parts: list[tuple[int, Text]], sep: str) -> int:
    return sum(p.cell_len for _, p in parts) + len(sep) * (len(parts) - 1)


def _without_raw(chosen: Text) -> Text:
    """The chosen line without its ` (raw …)` / ` · greedy (argmax)` tail (the Candidates pane has them)."""
    cuts = [at for at in (chosen.plain.find(" (raw "), chosen.plain.find(" · greedy")) if at >= 0]
    return chosen[: min(cuts)] if cuts else chosen
