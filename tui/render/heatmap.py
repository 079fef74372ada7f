"""Heatmap renderable: one line per drawn row (one query, or a pooled block of queries), `cell`
characters per drawn column, a position ruler and the cursor column's label on top, a row label
(position and token, or a position range) on the left, and a legend naming the colour scale.

A single row wider than the pane (a decode step) wraps over several lines, each labelled with
the key positions it holds, so every key is drawn.

An attention-sink column (`sink`: the mass each row puts on no key) is drawn apart, after a gap,
under the label `sink` (on its own line when the row wraps).
"""

from __future__ import annotations

import math

import numpy as np
from rich.cells import cell_len
from rich.console import Console, ConsoleOptions, RenderResult
from rich.measure import Measurement
from rich.segment import Segment
from rich.style import Style

from stepscope.tui.render.palette import MASKED, PALETTE, WINDOW, colour, half_block_style, levels
from stepscope.tui.text import fit, truncate

CELL_CHAR = "▀"  # drawn with foreground = background = the cell's colour
CURSOR_CHAR = "◆"
LABEL_STYLE = Style(dim=True)
CURSOR_LABEL_STYLE = Style(bold=True, reverse=True)
LOG_FLOOR = 1e-4
SINK_LABEL = "sink"


def _fmt(x: float) -> str:
    return f"{x:.3g}" if abs(x) < 1e4 else f"{x:.2e}"


class HeatmapRenderable:
    """A matrix in the sequential palette.

    values [R, C]; mask [R, C] True = not attended (dim grey, distinct from weight 0); window_mask
    [R, C] True = outside a sliding window (lighter grey); `scale` "map"/"fixed" (linear over
    [vmin, vmax]) or "log" (log10 over [1e-4, vmax]); `cursor` = (row, col) of the drawn cell to
    mark; `col_positions` label the ruler; `col_names` give the cursor column's label in full;
    `sink` [R] the attention-sink mass of each row (drawn as a separate, labelled column).
    """

    def __init__(self, values: np.ndarray, mask: np.ndarray | None = None, *, vmin: float = 0.0,
                 vmax: float | None = None, row_labels: list[str] | None = None,
                 cell: int = 1, label_width: int = 10, legend: bool = True, window_mask: np.ndarray | None = None,
                 window: int | None = None, scale: str = "map", cursor: tuple[int, int] | None = None,
                 col_positions: list[int] | None = None, col_names: list[str] | None = None,
                 wrap: bool = False, pool: int = 1, col_end: int | None = None, sink: np.ndarray | None = None):
        self.values = np.atleast_2d(np.asarray(values, dtype=np.float64))  # [R, C]
        self.mask = np.zeros(self.values.shape, dtype=bool) if mask is None else np.asarray(mask, dtype=bool)
        self.window_mask = None if window_mask is None else np.asarray(window_mask, dtype=bool)  # [R, C]
        self.window = window
        finite = self.values[~self.mask & np.isfinite(self.values)]
        self.vmin = float(vmin)
        self.vmax = float(vmax) if vmax is not None else (float(finite.max()) if finite.size else 1.0)
        self.scale = scale
        self.row_labels = row_labels
        self.cell = max(1, int(cell))
        self.label_width = label_width if row_labels is not None else 0
        self.legend = legend
        self.cursor = cursor
        self.col_positions = col_positions
        self.col_names = col_names
        self.wrap = wrap and self.values.shape[0] == 1
        self.pool = max(1, int(pool))
        self.col_end = col_end
        self.sink = None if sink is None else np.asarray(sink, dtype=np.float64).reshape(-1)  # [R]

    @classmethod
    def from_map(cls, amap, **kwargs) -> HeatmapRenderable:
        """From a `tui.views.heatmap.AttentionMap`."""
        return cls(amap.values, amap.mask, vmin=amap.vmin, vmax=amap.vmax,
                   row_labels=amap.row_names or amap.row_labels,
                   window_mask=amap.window_mask, window=amap.window, scale=getattr(amap, "scale", "map"),
                   col_positions=amap.col_positions, col_names=amap.col_names, pool=amap.pool,
                   col_end=amap.first_key + amap.viewport.col0 + amap.viewport.cols,
                   sink=getattr(amap, "sink", None), **kwargs)

    @property
    def grid_width(self) -> int:
        return self.values.shape[1] * self.cell

    @property
    def prefix_width(self) -> int:
        return self.label_width + (1 if self.label_width else 0)

    def __rich_measure__(self, console: Console, options: ConsoleOptions) -> Measurement:
        width = self.prefix_width + self.grid_width + (1 + self.cell if self.sink is not None else 0)
        return Measurement(min(width, options.max_width), max(width, 40 if self.legend else width))

    def _levels(self, values: np.ndarray | None = None, masked: bool = True) -> np.ndarray:
        """Palette index of each drawn cell (of `values`, default the map) under the scale mode."""
        values = self.values if values is None else values
        mask, window_mask = (self.mask, self.window_mask) if masked else (None, None)
        if self.scale == "log":
            logv = np.log10(np.clip(np.nan_to_num(values, nan=0.0), LOG_FLOOR, None))
            return levels(logv, math.log10(LOG_FLOOR), math.log10(max(self.vmax, LOG_FLOOR * 10)), mask, window_mask)
        return levels(values, self.vmin, self.vmax, mask, window_mask)

    def cols_per_line(self, max_width: int) -> int:
        """Drawn columns on one line (all of them unless wrapping)."""
        if not self.wrap:
            return self.values.shape[1]
        return max(1, (max_width - self.prefix_width) // self.cell)

    def _ruler(self, width: int) -> RenderResult:
        """Key positions every few columns, each written where its column starts."""
        positions = self.col_positions or []
        if not positions:
            return
        widest = len(str(positions[-1])) + 1
        every = next(m for m in (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 10**9) if m * self.cell >= widest)
        line = [" "] * self.grid_width
        for j, pos in enumerate(positions):
            if j % every:
                continue
            label, x = str(pos), j * self.cell
            if x + len(label) <= len(line):
                line[x : x + len(label)] = list(label)
        if self.sink is not None:
            line += [" "] + list(SINK_LABEL)
        yield Segment(" " * self.prefix_width)
        yield Segment(truncate("".join(line), max(0, width - self.prefix_width)).rstrip(), LABEL_STYLE)
        yield Segment.line()

    def _cursor_label(self, width: int, left: bool = False) -> RenderResult:
        """The cursor column's name in full, starting above its column (shifted left to fit; at
        the left edge when the row wraps, after the query the wrapped lines belong to)."""
        query = ""
        if left and self.row_labels:  # a wrapped row: its lines are labelled by keys only
            query = f"q {self.row_labels[0].strip()} → "
        if self.cursor is None or not self.col_names or not 0 <= self.cursor[1] < len(self.col_names):
            if query:
                yield Segment(" " * self.prefix_width)
                yield Segment(truncate(query + "keys:", max(1, width - self.prefix_width)), LABEL_STYLE)
            yield Segment.line()
            return
        label = truncate(query + self.col_names[self.cursor[1]], max(1, width - self.prefix_width))
        x = self.prefix_width + (0 if left else self.cursor[1] * self.cell)
        x = max(0, min(x, width - cell_len(label)))
        yield Segment(" " * x)
        yield Segment(label, CURSOR_LABEL_STYLE)
        yield Segment.line()

    def _legend(self) -> RenderResult:
        if self.scale == "log":
            lo, hi, name = f"{LOG_FLOOR:g}", _fmt(self.vmax), "log "
        else:
            lo, hi, name = _fmt(self.vmin), _fmt(self.vmax), "fixed " if self.scale == "fixed" else "per map "
        yield Segment(f"{name}{lo} ", LABEL_STYLE)
        for c in PALETTE:
            yield Segment("█", Style(color=c))
        yield Segment(f" {hi}   ", LABEL_STYLE)
        yield Segment("█", Style(color=MASKED))
        yield Segment(" masked", LABEL_STYLE)
        if self.window_mask is not None and self.window_mask.any():
            yield Segment("  ")
            yield Segment("█", Style(color=WINDOW))
            yield Segment(f" outside window {self.window}" if self.window else " outside window", LABEL_STYLE)
        if self.sink is not None:
            yield Segment(f"  {SINK_LABEL}: mass on no key", LABEL_STYLE)
        yield Segment.line()

    def _wrap_label(self, c0: int, c1: int) -> str:
        positions = self.col_positions or list(range(self.values.shape[1]))
        end = positions[c1] - 1 if c1 < len(positions) else (self.col_end - 1 if self.col_end else positions[-1])
        label = f"k {positions[c0]}" if end == positions[c0] else f"k {positions[c0]}–{end}"
        return label if len(label) <= self.label_width else label[2:]  # the numbers whole, before the "k "

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        width = options.max_width
        lv = self._levels()  # [R, C]
        sink = None if self.sink is None else self._levels(self.sink, masked=False)  # [R]
        n_rows, n_cols = lv.shape
        cur_r, cur_c = self.cursor if self.cursor is not None else (-1, -1)
        if not self.wrap:
            yield from self._ruler(width)
            yield from self._cursor_label(width)
            for r in range(n_rows):
                if self.label_width:
                    label = fit((self.row_labels or [""] * n_rows)[r] if r < len(self.row_labels or []) else "",
                                self.label_width, "right")
                    yield Segment(label, CURSOR_LABEL_STYLE if r == cur_r else LABEL_STYLE)
                    yield Segment(" ")
                yield from _cells(lv[r], self.cell, cur_c if r == cur_r else -1)
                if sink is not None and r < sink.shape[0]:
                    yield Segment(" ")
                    yield from _cells(sink[r : r + 1], self.cell, -1)
                yield Segment.line()
        else:
            per_line = self.cols_per_line(width)
            yield from self._cursor_label(width, left=True)
            for c0 in range(0, n_cols, per_line):
                c1 = min(n_cols, c0 + per_line)
                if self.label_width:
                    on_cursor = cur_r == 0 and c0 <= cur_c < c1
                    yield Segment(fit(self._wrap_label(c0, c1), self.label_width, "right"),
                                  CURSOR_LABEL_STYLE if on_cursor else LABEL_STYLE)
                    yield Segment(" ")
                yield from _cells(lv[0, c0:c1], self.cell, cur_c - c0 if cur_r == 0 else -1)
                yield Segment.line()
            if sink is not None and sink.shape[0]:
                if self.label_width:
                    yield Segment(fit(SINK_LABEL, self.label_width, "right"), LABEL_STYLE)
                    yield Segment(" ")
                yield from _cells(sink[:1], self.cell, -1)
                yield Segment.line()
        if self.legend:
            yield from self._legend()


def _cells(row: np.ndarray, cell: int, cursor: int) -> RenderResult:
    """One line of cells, runs of equal colour merged; the cursor cell marked with `◆`."""
    values = row.tolist()
    start = 0
    for c in range(1, len(values) + 1):
        if c == len(values) or values[c] != values[start] or c == cursor or start == cursor:
            level = values[start]
            if start == cursor:  # a run of one cell
                fg = "black" if level >= len(PALETTE) // 2 else "white"
                yield Segment(CURSOR_CHAR, Style(color=fg, bgcolor=colour(level), bold=True))
                if cell > 1:
                    yield Segment(CELL_CHAR * (cell - 1), half_block_style(level, level))
            else:
                yield Segment(CELL_CHAR * (cell * (c - start)), half_block_style(level, level))
            start = c
