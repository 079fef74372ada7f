"""What the Patching pane shows, as plain data: column labels, cell levels, the readout (numpy only).

A patching result (tracer/patch_format.py) is a layers × positions (or layers × heads) grid of the
restored metric: 0 = the corrupted run, 1 = the clean run. Cells are drawn by level: 0 near zero,
±1..±4 by size (|v| ≥ 1 is ±4), the sign choosing the colour.
"""

from __future__ import annotations

import math

import numpy as np

from stepscope.tracer.inert import inert

LEVELS = 4
ZERO = 0.05  # |value| below this draws as level 0


def token_label(text: str, limit: int = 8) -> str:
    """A token as a short visible label (spaces shown as ·, control characters made inert)."""
    shown = inert(text, limit * 4).replace(" ", "·") or "∅"
    return shown if len(shown) <= limit else shown[: limit - 1] + "…"


def column_labels(result) -> list[str]:
    """One label per column: the clean token at each position (`*` where the corrupted token differs), or h0.."""
    if result.site == "head":
        return [f"h{h}" for h in range(result.values.shape[1])]
    return [token_label(c) + ("*" if c != r else "") for c, r in zip(result.tokens, result.corrupt_tokens)]


def level(value: float) -> int:
    """-4..4 for a value (0: near zero or not computed)."""
    if not math.isfinite(value) or abs(value) < ZERO:
        return 0
    return int(math.copysign(min(LEVELS, 1 + int(abs(value) * LEVELS)), value))


def levels(values: np.ndarray) -> np.ndarray:
    """[layers, columns] of levels."""
    return np.vectorize(level, otypes=[int])(values) if values.size else np.zeros(values.shape, dtype=int)


def cell_label(result, layer: int, column: int) -> str:
    """"L24 position 3 ' France'" (→ the corrupted token when it differs) or "L5 H3"."""
    if result.site == "head":
        return f"L{layer} H{column}"
    clean, corrupt = result.tokens[column], result.corrupt_tokens[column]
    token = repr(inert(clean, 40)) + (f" (corrupted {inert(corrupt, 40)!r})" if corrupt != clean else "")
    return f"L{layer} position {column} {token}"


def best_cell(result) -> tuple[int, int] | None:
    """(layer, column) of the largest |value|, None for an empty or uncomputed grid."""
    v = np.where(np.isfinite(result.values), np.abs(result.values), -1.0)
    if not v.size or v.max() < 0:
        return None
    layer, column = divmod(int(v.argmax()), v.shape[1])
    return layer, column


def title(result) -> str:
    what = "head at the last position" if result.site == "head" else "position"
    method = "attribution estimate" if result.method == "attribution" else "patching"
    return (f"{method} · {result.site} per layer × {what} · step {result.step} · logit difference "
            f"{inert(result.clean_token['text'], 40)!r} − {inert(result.corrupt_token['text'], 40)!r} restored "
            f"(0 = corrupted, 1 = clean)")


def readout(result, layer: int, column: int) -> list[str]:
    """The selected cell in words, then the baselines and the largest cell."""
    v = result.cell(layer, column)
    value = "not computed" if not math.isfinite(v) else f"{v:+.3f}"
    verb = "estimated to restore" if result.method == "attribution" else "restores"
    lines = [f"{cell_label(result, layer, column)}: {verb} {value} of the difference"]
    lines.append(f"logit difference: clean {result.clean_metric:+.3f}, corrupted {result.corrupt_metric:+.3f}")
    best = best_cell(result)
    if best is not None:
        lines.append(f"largest: {cell_label(result, *best)} {result.cell(*best):+.3f}")
    return lines


def clamp_cell(result, layer: int, column: int) -> tuple[int, int]:
    rows, cols = result.values.shape
    return max(0, min(layer, rows - 1)), max(0, min(column, cols - 1))
