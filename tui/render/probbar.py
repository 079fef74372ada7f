"""A horizontal probability bar with eighth-block resolution."""

from __future__ import annotations

import math

from rich.console import Console, ConsoleOptions, RenderResult
from rich.measure import Measurement
from rich.segment import Segment
from rich.style import Style

PARTIAL = " ▏▎▍▌▋▊▉"


def bar_chars(p: float, width: int) -> str:
    """`p` in [0, 1] as `width` cells of full and partial blocks, padded with spaces."""
    p = 0.0 if not math.isfinite(p) else min(max(p, 0.0), 1.0)
    eighths = round(p * width * 8)
    full, part = divmod(eighths, 8)
    s = "█" * full + (PARTIAL[part] if part and full < width else "")
    return s.ljust(width)


class ProbBar:
    """`p` as a bar `width` cells wide; an optional style for the filled part."""

    def __init__(self, p: float, width: int = 10, style: str | Style = "", end: str = "\n"):
        self.p, self.width, self.style, self.end = p, max(1, width), style, end

    def __rich_measure__(self, console: Console, options: ConsoleOptions) -> Measurement:
        return Measurement(self.width, self.width)

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        chars = bar_chars(self.p, self.width)
        filled = chars.rstrip(" ")
        style = console.get_style(self.style) if isinstance(self.style, str) else self.style
        if filled:
            yield Segment(filled, style)
        if len(chars) > len(filled):
            yield Segment(" " * (len(chars) - len(filled)))
        if self.end:
            yield Segment(self.end)
