"""What the Compare pane reads: two traces compared at a step (`tracer.diff`), and the largest
differences of one tensor. The lines are drawn by `tui.render.diff`."""

from __future__ import annotations

from dataclasses import dataclass

from stepscope.tracer.diff import TraceDiff, compare, tensor_diff

_CACHE: dict[tuple[int, int], TraceDiff] = {}


def cached_diff(a, b) -> TraceDiff:
    key = (id(a), id(b))
    if key not in _CACHE:
        _CACHE.clear()
        _CACHE[key] = compare(a, b)
    return _CACHE[key]


@dataclass(frozen=True)
class TensorDifference:
    """One tensor of a step in both traces: where they differ most."""

    shape: list[int]  # A's shape
    cropped: bool  # aligned at the end (the traces' lengths differ)
    max_abs: float  # largest |b − a|
    row: int  # the row (over the last axis) holding the largest difference
    top: list[tuple[int, float, float, float]]  # (index, A, B, b − a) of its largest differences


def tensor_difference(a, b, step: int, name: str, n: int = 8) -> TensorDifference:
    """The n largest differences of tensor `name` at `step` (raises TraceError when not comparable)."""
    side = tensor_diff(a, b, step, name)
    x, y, diff = side["a"], side["b"], side["diff"]
    flat = abs(diff).reshape(-1)
    rows = x.reshape(-1, x.shape[-1]) if x.ndim > 1 else x.reshape(1, -1)  # [R, C]
    rows_b, rows_d = y.reshape(rows.shape), diff.reshape(rows.shape)  # [R, C]
    r = int(abs(rows_d).max(axis=1).argmax()) if rows_d.size else 0
    top = sorted(range(rows.shape[1]), key=lambda j: -abs(rows_d[r, j]))[:n]
    return TensorDifference(list(x.shape), bool(side["cropped"]), float(flat.max()) if flat.size else 0.0, r,
                            [(j, float(rows[r, j]), float(rows_b[r, j]), float(rows_d[r, j])) for j in top])


