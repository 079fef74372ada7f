"""The heatmap's sequential palette (dark navy → magenta → salmon → yellow → cream).

Every colour sits exactly on the xterm 256-colour cube, so rich's downgrade to 256 colours keeps
each level distinct and the luminance strictly increasing; truecolor terminals show the same.
"""

from __future__ import annotations

import numpy as np
from rich.color import Color
from rich.style import Style

PALETTE_RGB: tuple[tuple[int, int, int], ...] = (
    (0, 0, 95),
    (95, 0, 135),
    (135, 0, 135),
    (175, 0, 135),
    (215, 0, 135),
    (255, 0, 95),
    (255, 95, 95),
    (255, 135, 95),
    (255, 175, 95),
    (255, 215, 95),
    (255, 255, 95),
    (255, 255, 215),
)
MASKED_RGB = (48, 48, 48)  # dim grey: masked (not attended) cells, distinct from weight 0
WINDOW_RGB = (98, 98, 98)  # lighter grey: keys outside a sliding window (xterm grey ramp 241)

PALETTE: tuple[Color, ...] = tuple(Color.from_rgb(*rgb) for rgb in PALETTE_RGB)
MASKED = Color.from_rgb(*MASKED_RGB)
WINDOW = Color.from_rgb(*WINDOW_RGB)
MASKED_LEVEL = -1
WINDOW_LEVEL = -2


def luminance(rgb: tuple[int, int, int]) -> float:
    r, g, b = rgb
    return 0.2126 * r + 0.7152 * g + 0.0722 * b


def levels(values: np.ndarray, vmin: float, vmax: float, mask: np.ndarray | None = None,
           window_mask: np.ndarray | None = None) -> np.ndarray:
    """Palette index of each value (equal-width bins over [vmin, vmax]); MASKED_LEVEL where masked,
    WINDOW_LEVEL where outside a sliding window."""
    n = len(PALETTE)
    span = vmax - vmin if vmax > vmin else 1.0
    scaled = (np.nan_to_num(np.asarray(values, dtype=np.float64), nan=vmin) - vmin) / span  # [...] in [0, 1]
    idx = np.clip(np.floor(scaled * n), 0, n - 1).astype(np.int64)
    if mask is not None:
        idx = np.where(mask, MASKED_LEVEL, idx)
    if window_mask is not None:
        idx = np.where(window_mask, WINDOW_LEVEL, idx)
    return idx


def colour(level: int) -> Color:
    if level == MASKED_LEVEL:
        return MASKED
    return WINDOW if level == WINDOW_LEVEL else PALETTE[level]


_STYLES: dict[tuple[int, int | None], Style] = {}


def half_block_style(upper: int, lower: int | None) -> Style:
    """Style for `▀`: foreground = upper cell's colour, background = lower cell's (None: none)."""
    key = (upper, lower)
    style = _STYLES.get(key)
    if style is None:
        style = _STYLES[key] = Style(color=colour(upper), bgcolor=None if lower is None else colour(lower))
    return style
