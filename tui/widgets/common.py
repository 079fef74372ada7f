"""Small helpers shared by the app's own widgets (not a widget).

Token text is model data: `token_display` returns a `rich.text.Text` built by
`tui.text.display_token` from the plain string, never markup.
"""

from __future__ import annotations

import math
from typing import Any

from rich.text import Text

from stepscope.tui.text import display_token

PROB_BUCKETS = (0.8, 0.5, 0.2, 0.05)  # p >= 0.8 -> bucket 0 ... p < 0.05 -> bucket 4


def prob_bucket(p: float | None) -> int:
    """0 (confident) .. 4 (unlikely) for a probability; 4 when unknown."""
    if p is None or not isinstance(p, (int, float)) or math.isnan(p):
        return 4
    for i, bound in enumerate(PROB_BUCKETS):
        if p >= bound:
            return i
    return 4


def token_display(text: Any, special: bool = False, alone: bool = True) -> Text:
    """A token's text made safe and visible (whitespace, control characters, markup inert; `alone` as
    in `display_token`)."""
    if not isinstance(text, str):
        text = "" if text is None else str(text)
    return display_token(text, special, alone)


def fmt_prob(p: float | None) -> str:
    """A probability in exactly 5 characters, so table columns align at any value: `0.773`, `1.000`,
    `0.000`; below 0.001 one significant digit, `9e-04` (`<e-99` below 1e-99); `    –` unknown."""
    if p is None or not isinstance(p, (int, float)) or math.isnan(p):
        return "    –"
    p = min(max(float(p), 0.0), 1.0)
    if p >= 0.001 or p == 0:
        return f"{p:.3f}"
    if p < 1e-99:
        return "<e-99"
    return f"{p:.0e}"


def fmt_num(x: float | None, digits: int = 3) -> str:
    if x is None or not isinstance(x, (int, float)):
        return "–"
    if math.isnan(x):
        return "nan"
    if math.isinf(x):
        return "inf" if x > 0 else "-inf"
    if x != 0 and (abs(x) >= 1e5 or abs(x) < 1e-3):
        return f"{x:.2e}"
    return f"{x:.{digits}f}" if abs(x) < 100 else f"{x:.1f}"
