"""Layers × heads overview: one cell per (layer, query head) of a per-head statistic.

The statistic is the normalised attention entropy of the head's last query row at the current
step: H / log(S) in [0, 1], 0 = the head looks at a single key, 1 = spread evenly. Cells are
drawn with shade glyphs (`  ░ ▒ ▓ █`, darker = more focused), so the grid reads in 256 colours
and in monochrome; the selected layer/head is highlighted. Only the rows that fit are read.

Keys (screen level): `j`/`k` `↓`/`↑` layer, `h`/`l` head; focused, `PgDn`/`PgUp` move a page of
layers; a click on a cell selects its layer and head. Every layer's row is reachable: the rows shown
are the height left after the title, the column header and the readout.
"""

from __future__ import annotations

import math

from rich.text import Text
from textual.binding import Binding

from stepscope.tui.render.columns import wrap_parts
from stepscope.tui.views.layers import head_grid, head_stats
from stepscope.tui.widgets.layers import window
from stepscope.tui.widgets.pane import Pane

SHADES = ("██", "▓▓", "▒▒", "░░", "··")  # focused .. diffuse
TITLE = "attention entropy per head H/log S:"
SCALE = "focused " + " ".join(f"{shade}<.{2 * (i + 1)}" for i, shade in enumerate(SHADES[:-1])) + f" {SHADES[-1]}≤1 diffuse"
# focused ██<.2 ▓▓<.4 ▒▒<.6 ░░<.8 ··≤1 diffuse: the levels of `level()`
LEVEL_CLASSES = tuple(f"heads-overview--l{i}" for i in range(len(SHADES)))


def level(value: float | None) -> int | None:
    """0 (focused) .. 4 (diffuse) for a normalised entropy in [0, 1]; None when unknown."""
    if value is None or math.isnan(value):
        return None
    return min(int(max(value, 0.0) * len(SHADES)), len(SHADES) - 1)


def shade(value: float | None) -> str:
    index = level(value)
    return "  " if index is None else SHADES[index]


class HeadsOverview(Pane, can_focus=True):
    """The layers × heads grid of the trace at the cursor."""

    COMPONENT_CLASSES = {
        "heads-overview--selected",
        "heads-overview--row",
        "heads-overview--header",
        *LEVEL_CLASSES,
    }

    PREFETCH_WHEN_HIDDEN = True
    """Cheap enough to prepare for the current step while another pane shows (a quick switch)."""

    BINDINGS = [
        Binding("pagedown", "page(1)", "Page down", show=False, tooltip="A page of layers down"),
        Binding("pageup", "page(-1)", "Page up", show=False, tooltip="A page of layers up"),
    ]

    _first_row = 0
    _top = 2  # lines above the first row (title, column header)
    _rows = 1  # layer rows the last render showed
    ROW_LABEL = 5  # "  12 " before the cells; each cell is 3 cells wide ("▓▓ ")

    def action_page(self, direction: int) -> None:
        n_layers = int(self._trace.model.get("n_layers") or 0) if self._trace is not None else 0
        if n_layers:
            self.move(layer=min(max(self.cursor.layer + direction * max(self._rows, 1), 0), n_layers - 1))

    def on_click(self, event) -> None:
        """A click on a cell selects that layer and head."""
        offset = event.get_content_offset(self)
        if offset is None or self._trace is None or offset.y < self._top or offset.x < self.ROW_LABEL:
            return
        layer = self._first_row + offset.y - self._top
        head = (offset.x - self.ROW_LABEL) // 3
        if layer < int(self._trace.model.get("n_layers") or 0) and head < int(self._trace.model.get("n_heads") or 0):
            self.move(layer=layer, head=head)

    def prefetch(self, step_index: int) -> None:
        """Compute (into the views cache) the stats of the rows that show, at `step_index`."""
        trace = self._trace
        if trace is None or not 0 <= step_index < len(trace.steps):
            return
        n_layers = int(trace.model.get("n_layers") or 0)
        height = self.size.height - 3 if self.size.height else n_layers  # hidden: prepare every row
        start, end = window(self.cursor.layer, n_layers, height)
        for layer in range(start, end):
            head_stats(trace, step_index, layer)

    def render(self) -> Text:
        trace = self._trace
        if trace is None or not len(trace.steps):
            return Text("layers × heads", style="dim")
        model = trace.model
        n_layers = int(model.get("n_layers") or 0)
        n_heads = int(model.get("n_heads") or 0)
        index = self.step_index
        s_len = trace.steps[index].positions[1]
        norm = math.log(s_len) if s_len > 1 else 1.0
        style = self.get_component_rich_style
        header_style = style("heads-overview--header")
        levels = [style(c) for c in LEVEL_CLASSES]
        selected = style("heads-overview--selected")
        title = wrap_parts([TITLE, SCALE], self.size.width or 80, sep=" ")
        lines = [Text(t, style=header_style) for t in title]
        self._top = len(title) + 1  # the title and the column header above the rows
        header = Text("   L ", style=header_style)
        for head in range(n_heads):
            header.append(f"{head:>2} ")
        lines.append(header)
        readout = self._readout(trace, index, norm)
        start, end = window(self.cursor.layer, n_layers, self.size.height - self._top - len(readout))
        self._first_row, self._rows = start, end - start
        grid = head_grid(trace, index, layers=range(start, end)) / norm  # [rows, n_heads], NaN: not recorded
        for layer in range(start, end):
            values = grid[layer - start]
            line = Text(f"{layer:>4} ", style=style("heads-overview--row") if layer == self.cursor.layer else "")
            # consecutive cells of one style form one span (fewer segments: a cheaper redraw)
            run_text, run_style = "", None
            for head in range(n_heads):
                value = float(values[head])
                lv = level(value)
                cell_style = selected if (layer == self.cursor.layer and head == self.cursor.head) else (
                    levels[lv] if lv is not None else None)
                if cell_style != run_style and run_text:
                    line.append(run_text, style=run_style)
                    run_text = ""
                run_text, run_style = run_text + shade(value) + " ", cell_style
            if run_text:
                line.append(run_text, style=run_style)
            lines.append(line)
        lines.extend(Text(line, style=header_style) for line in readout)
        return Text("\n").join(lines)

    def _readout(self, trace, index: int, norm: float) -> list[str]:
        """The selected head's figures, broken between its figures (never through one) to the width."""
        stats = head_stats(trace, index, self.cursor.layer)
        if stats is None or self.cursor.head >= len(stats.entropy):
            return []
        value = float(stats.entropy[self.cursor.head])
        readout = [f"L{self.cursor.layer} H{self.cursor.head}: entropy {value:.3f} nats",
                   f"H/log(S) {value / norm:.2f}",
                   f"max weight {float(stats.max_weight[self.cursor.head]):.3f} "
                   f"at position {int(stats.max_position[self.cursor.head])}"]
        out, line = [], ""
        for piece in readout:
            if line and len(line) + 2 + len(piece) > self.size.width:
                out.append(line)
                line = piece
            else:
                line = f"{line}, {piece}" if line else piece
        return [*out, line]
