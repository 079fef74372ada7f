"""Half-block heatmap: two matrix rows per character line (`▀`, fg = upper row, bg = lower row),
vertical key labels on top, query labels on the left, a colour-scale legend below."""

from __future__ import annotations

import numpy as np
from rich.console import Console, ConsoleOptions, RenderResult
from rich.measure import Measurement
from rich.segment import Segment
from rich.style import Style

from tui.render.palette import MASKED, PALETTE, WINDOW, half_block_style, levels
from tui.text import escape_for_display, truncate

UPPER_HALF = "▀"
LABEL_STYLE = Style(dim=True)
ROW_SPLIT = "╱"  # between the two query labels of one line


def _fmt(x: float) -> str:
    return f"{x:.3g}" if abs(x) < 1e4 else f"{x:.2e}"


class HeatmapRenderable:
    """A matrix drawn with half blocks in the sequential palette.

    values [R, C]; mask [R, C] True = not attended (drawn dim grey, distinct from 0); window_mask
    [R, C] True = not attended because outside a sliding window (a lighter grey); `cell` =
    characters per data column (and half-lines per data row) when zoomed in.
    """

    def __init__(self, values: np.ndarray, mask: np.ndarray | None = None, *, vmin: float = 0.0,
                 vmax: float | None = None, row_labels: list[str] | None = None,
                 col_labels: list[str] | None = None, cell: int = 1, label_width: int = 10,
                 col_label_rows: int = 3, legend: bool = True, window_mask: np.ndarray | None = None,
                 window: int | None = None):
        self.values = np.atleast_2d(np.asarray(values, dtype=np.float64))  # [R, C]
        self.mask = np.zeros(self.values.shape, dtype=bool) if mask is None else np.asarray(mask, dtype=bool)
        self.window_mask = None if window_mask is None else np.asarray(window_mask, dtype=bool)  # [R, C]
        self.window = window
        finite = self.values[~self.mask & np.isfinite(self.values)]
        self.vmin = float(vmin)
        self.vmax = float(vmax) if vmax is not None else (float(finite.max()) if finite.size else 1.0)
        self.row_labels = row_labels
        self.col_labels = col_labels
        self.cell = max(1, int(cell))
        self.label_width = label_width if row_labels is not None else 0
        self.col_label_rows = col_label_rows if col_labels is not None else 0
        self.legend = legend

    @classmethod
    def from_map(cls, amap, **kwargs) -> "HeatmapRenderable":
        """From a `tui.views.heatmap.AttentionMap`."""
        return cls(amap.values, amap.mask, vmin=amap.vmin, vmax=amap.vmax, row_labels=amap.row_labels,
                   col_labels=amap.col_labels, window_mask=amap.window_mask, window=amap.window, **kwargs)

    @property
    def grid_width(self) -> int:
        return self.values.shape[1] * self.cell

    def __rich_measure__(self, console: Console, options: ConsoleOptions) -> Measurement:
        width = self.label_width + (1 if self.label_width else 0) + self.grid_width
        return Measurement(width, max(width, 40 if self.legend else width))

    def _levels(self) -> np.ndarray:
        lv = levels(self.values, self.vmin, self.vmax, self.mask, self.window_mask)  # [R, C]
        return np.repeat(np.repeat(lv, self.cell, axis=0), self.cell, axis=1)  # [R·cell, C·cell]

    def _row_label(self, line: int, n_rows: int) -> str:
        upper, lower = (2 * line) // self.cell, (2 * line + 1) // self.cell
        labels = self.row_labels or []
        if upper == lower and line > 0 and (2 * line - 1) // self.cell == upper:
            return " " * self.label_width  # a tall row: its label is on its first line only
        up = escape_for_display(labels[upper]) if upper < len(labels) else ""
        if lower == upper or lower >= n_rows or lower >= len(labels):
            return truncate(up, self.label_width).rjust(self.label_width)
        half = (self.label_width - 1) // 2
        low = escape_for_display(labels[lower])
        return (truncate(up, self.label_width - 1 - half) + ROW_SPLIT + truncate(low, half)).rjust(self.label_width)

    def _col_label_lines(self) -> RenderResult:
        labels = [escape_for_display(lab) for lab in (self.col_labels or [])]
        pad = " " * (self.label_width + (1 if self.label_width else 0))
        for j in range(self.col_label_rows):
            chars = "".join((lab[j] if j < len(lab) else " ") + " " * (self.cell - 1) for lab in labels)
            yield Segment(pad)
            yield Segment(chars, LABEL_STYLE)
            yield Segment.line()

    def _legend(self) -> RenderResult:
        yield Segment(f"{_fmt(self.vmin)} ", LABEL_STYLE)
        for c in PALETTE:
            yield Segment("█", Style(color=c))
        yield Segment(f" {_fmt(self.vmax)}   ", LABEL_STYLE)
        yield Segment("█", Style(color=MASKED))
        yield Segment(" masked", LABEL_STYLE)
        if self.window_mask is not None and self.window_mask.any():
            yield Segment("  ")
            yield Segment("█", Style(color=WINDOW))
            yield Segment(f" outside window {self.window}" if self.window else " outside window", LABEL_STYLE)
        yield Segment.line()

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        yield from self._col_label_lines()
        lv = self._levels()  # [rows, cols] expanded
        n_rows = self.values.shape[0]
        for line in range((lv.shape[0] + 1) // 2):
            if self.label_width:
                yield Segment(self._row_label(line, n_rows), LABEL_STYLE)
                yield Segment(" ")
            yield from _half_block_line(lv[2 * line], lv[2 * line + 1] if 2 * line + 1 < lv.shape[0] else None)
            yield Segment.line()
        if self.legend:
            yield from self._legend()


def _half_block_line(upper: np.ndarray, lower: np.ndarray | None) -> RenderResult:
    """One line of `▀` cells, runs of equal (upper, lower) colours merged into one segment."""
    pairs = list(zip(upper.tolist(), lower.tolist() if lower is not None else [None] * len(upper)))
    start = 0
    for c in range(1, len(pairs) + 1):
        if c == len(pairs) or pairs[c] != pairs[start]:
            yield Segment(UPPER_HALF * (c - start), half_block_style(*pairs[start]))
            start = c
