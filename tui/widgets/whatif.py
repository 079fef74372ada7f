"""What-if panel: the step replayed under other sampling settings, beside what happened."""

from __future__ import annotations

from dataclasses import replace

from rich.text import Text
from textual.binding import Binding

from stepscope.tui.render.whatif import whatif_lines
from stepscope.tui.views.whatif import adjusted, recorded_settings
from stepscope.tui.widgets.lines_pane import LinesPane

_KNOBS = [("t", "temperature"), ("k", "top_k"), ("p", "top_p"), ("m", "min_p"), ("n", "seed")]


class WhatIfPane(LinesPane):
    """Temperature / top-k / top-p / min-p / seed of a replay, one key each (lower: down, upper: up)."""

    WATCHES = frozenset({"step"})
    BINDINGS = [
        *LinesPane.BINDINGS,
        *(Binding(key, f"knob('{what}', -1)", f"{what} down", show=False) for key, what in _KNOBS),
        *(Binding(key.upper(), f"knob('{what}', 1)", f"{what} up", show=False) for key, what in _KNOBS),
        Binding("g", "toggle_sample", "Greedy/sample", tooltip="Switch the replay between greedy and sampling"),
        Binding("r", "recorded", "Recorded settings", tooltip="Back to the settings of the run"),
    ]

    def __init__(self, trace=None, **kwargs) -> None:
        super().__init__(trace, **kwargs)
        self.settings = recorded_settings(trace) if trace is not None else None

    def on_trace(self) -> None:
        if self.settings is None and self.trace is not None:
            self.settings = recorded_settings(self.trace)

    def lines(self) -> list[Text]:
        if self.trace is None or not len(self.trace.steps):
            return [Text("no step yet", style="dim")]
        assert self.settings is not None  # set with the trace
        return whatif_lines(self.trace, self.step_index, self.settings, width=max(self.scrollable_content_region.width, 20))

    def action_knob(self, what: str, delta: int) -> None:
        if self.settings is None:  # no trace yet
            return
        self.settings = adjusted(self.settings, what, delta)
        self.invalidate()

    def action_toggle_sample(self) -> None:
        if self.settings is None:
            return
        self.settings = replace(self.settings, do_sample=not self.settings.do_sample)
        self.invalidate()

    def action_recorded(self) -> None:
        self.settings = recorded_settings(self.trace)
        self.invalidate()
