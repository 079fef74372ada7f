"""One-line sparkline and histogram renderables (eighth blocks ▁..█)."""

from __future__ import annotations

import numpy as np
from rich.console import Console, ConsoleOptions, RenderResult
from rich.measure import Measurement
from rich.segment import Segment
from rich.style import Style

BLOCKS = "▁▂▃▄▅▆▇█"


def spark_chars(values, zero_blank: bool = False) -> str:
    """Each value as one of 8 block heights scaled to the maximum (a space for 0 if zero_blank)."""
    v = np.nan_to_num(np.asarray(values, dtype=np.float64).ravel(), nan=0.0)  # [n]
    if v.size == 0:
        return ""
    lo = 0.0 if zero_blank else float(v.min())
    span = float(v.max()) - lo
    if span <= 0:
        return "".join(" " if zero_blank and x == 0 else BLOCKS[0] for x in v)
    idx = np.ceil((v - lo) / span * len(BLOCKS)).astype(np.int64) - 1  # [n] in -1..7
    idx = np.clip(idx, 0, len(BLOCKS) - 1)
    return "".join(" " if zero_blank and x <= 0 else BLOCKS[i] for x, i in zip(v, idx))


class Sparkline:
    """A series as a line of block heights (min..max)."""

    def __init__(self, values, style: str | Style = "", end: str = "\n"):
        self.chars = spark_chars(values)
        self.style, self.end = style, end

    def __rich_measure__(self, console: Console, options: ConsoleOptions) -> Measurement:
        return Measurement(len(self.chars), len(self.chars))

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        yield Segment(self.chars, console.get_style(self.style) if isinstance(self.style, str) else self.style)
        if self.end:
            yield Segment(self.end)


class Histogram:
    """Histogram counts as block heights (empty bins blank), optionally framed by the value range."""

    def __init__(self, counts, lo: float | None = None, hi: float | None = None, style: str | Style = "",
                 label_style: str | Style = "dim", end: str = "\n"):
        self.chars = spark_chars(counts, zero_blank=True)
        self.end = end
        self.lo, self.hi = lo, hi
        self.style, self.label_style = style, label_style

    def _labels(self) -> tuple[str, str]:
        if self.lo is None or self.hi is None:
            return "", ""
        return f"{self.lo:.3g} ", f" {self.hi:.3g}"

    def __rich_measure__(self, console: Console, options: ConsoleOptions) -> Measurement:
        left, right = self._labels()
        width = len(left) + len(self.chars) + len(right)
        return Measurement(width, width)

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        get = lambda s: console.get_style(s) if isinstance(s, str) else s  # noqa: E731
        left, right = self._labels()
        if left:
            yield Segment(left, get(self.label_style))
        yield Segment(self.chars, get(self.style))
        if right:
            yield Segment(right, get(self.label_style))
        if self.end:
            yield Segment(self.end)
