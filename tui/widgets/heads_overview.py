"""Layers × heads overview: one cell per (layer, query head) of a per-head statistic.

The statistic is the normalised attention entropy of the head's last query row at the current
step: H / log(S) in [0, 1], 0 = the head looks at a single key, 1 = spread evenly. Cells are
drawn with shade glyphs (`  ░ ▒ ▓ █`, darker = more focused), so the grid reads in 256 colours
and in monochrome; the selected layer/head is highlighted. Only the rows that fit are read.

Keys (screen level): `j`/`k` layer, `h`/`l` head.
"""

from __future__ import annotations

import math

from rich.text import Text
from textual.reactive import reactive
from textual.widget import Widget

from tui.views.layers import head_stats
from tui.widgets.layers import window

SHADES = ("██", "▓▓", "▒▒", "░░", "··")  # focused .. diffuse


def shade(value: float | None) -> str:
    if value is None or math.isnan(value):
        return "  "
    index = min(int(max(value, 0.0) * len(SHADES)), len(SHADES) - 1)
    return SHADES[index]


class HeadsOverview(Widget, can_focus=True):
    """The layers × heads grid; `trace`, `step`, `layer`, `head` are set by the app."""

    COMPONENT_CLASSES = {"heads-overview--selected", "heads-overview--row", "heads-overview--header"}

    step: reactive[int] = reactive(0)
    layer_index: reactive[int] = reactive(0)
    """Selected layer (not `layer`: Widget.layer is the compositor layer name)."""
    head: reactive[int] = reactive(0)

    def __init__(self, trace=None, **kwargs) -> None:
        super().__init__(**kwargs)
        self._trace = trace

    @property
    def trace(self):
        return self._trace

    @trace.setter
    def trace(self, value) -> None:
        self._trace = value
        self.refresh()

    def render(self) -> Text:
        trace = self._trace
        if trace is None or not len(trace.steps):
            return Text("layers × heads", style="dim")
        model = trace.model
        n_layers = int(model.get("n_layers") or 0)
        n_heads = int(model.get("n_heads") or 0)
        index = min(self.step, len(trace.steps) - 1)
        step = trace.steps[index]
        s_len = step.positions[1]
        norm = math.log(s_len) if s_len > 1 else 1.0
        style = self.get_component_rich_style
        out = Text(no_wrap=True, overflow="crop", end="")
        out.append("normalised attention entropy H/log(S), last query row (█ focused … · diffuse)\n", style=style("heads-overview--header"))
        header = Text("   L ", style=style("heads-overview--header"), end="")
        for head in range(n_heads):
            header.append(f"{head:<2}" if head < 100 else "··")
        out.append_text(header)
        start, end = window(self.layer_index, n_layers, self.size.height - 2)
        selected = style("heads-overview--selected")
        for layer in range(start, end):
            out.append("\n")
            stats = head_stats(trace, index, layer)
            ent = stats.entropy if stats is not None else None
            line = Text(f"{layer:>4} ", end="")
            for head in range(n_heads):
                value = float(ent[head]) / norm if ent is not None and head < len(ent) else None
                cell = shade(value)
                line.append(cell, style=selected if (layer == self.layer_index and head == self.head) else None)
            if layer == self.layer_index:
                line.stylize(style("heads-overview--row"), 0, 5)
            out.append_text(line)
        return out
