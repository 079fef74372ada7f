"""Every recorded tensor of a step: shape, dtype, statistics, histogram, producing operation,
slices for browsing and `.npy` export.

`tensor_infos` reads the step file's header only; `tensor_stats` reads one array and is cached
per (step file, name), so a list shows instantly and statistics are computed for what is viewed.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass

import numpy as np

from tracer.names import shape_doc
from tui.views.cache import cached
from tui.views.ops import operation

HIST_BINS = 24


@dataclass(frozen=True)
class TensorInfo:
    """What the step file's header says about a recorded tensor."""

    name: str
    shape: tuple[int, ...]
    dtype: str


@dataclass(frozen=True)
class TensorStats:
    """Statistics over the finite values (NaN/inf counted apart)."""

    min: float
    max: float
    mean: float
    std: float
    norm: float  # L2 norm of the finite values
    n_nan: int
    n_inf: int
    hist: np.ndarray  # [bins] int64 counts over [min, max]

    @property
    def nonfinite(self) -> int:
        return self.n_nan + self.n_inf


@dataclass(frozen=True)
class TensorSummary:
    info: TensorInfo
    op: str
    stats: TensorStats


_DTYPE_NAMES: dict[np.dtype, str] = {}


def _dtype_name(dtype: np.dtype) -> str:
    name = _DTYPE_NAMES.get(dtype)
    if name is None:
        name = _DTYPE_NAMES[dtype] = str(dtype)
    return name


def tensor_infos(trace, step_index: int) -> list[TensorInfo]:
    """Every recorded tensor of the step in forward order (header only, cached)."""
    step = trace.steps[step_index]
    return cached(step, "tensor_infos",
                  lambda: [TensorInfo(n, step.shape(n), _dtype_name(step.dtype(n))) for n in step.names])


def tensor_op(trace, step_index: int, name: str) -> str:
    """The producing operation with shapes (see `tui.views.ops.operation`), cached."""
    step = trace.steps[step_index]
    return cached(step, ("op", name), lambda: operation(step, name, trace.model))


def compute_stats(arr: np.ndarray, bins: int = HIST_BINS) -> TensorStats:
    """min/max/mean/std/L2 norm/NaN/inf/histogram of an array (float64 accumulation)."""
    a = np.asarray(arr).ravel()  # [n]
    if a.dtype.kind != "f":
        a = a.astype(np.float64)
    finite_mask = np.isfinite(a)  # [n]
    n_nan = int(np.isnan(a).sum())
    n_inf = int(a.size - n_nan - finite_mask.sum())
    f = a if n_nan + n_inf == 0 else a[finite_mask]  # [n_finite]
    if f.size == 0:
        return TensorStats(np.nan, np.nan, np.nan, np.nan, 0.0, n_nan, n_inf, np.zeros(bins, dtype=np.int64))
    f64 = f.astype(np.float64, copy=False)
    lo, hi = float(f64.min()), float(f64.max())
    mean = float(f64.mean())
    std = float(f64.std())
    norm = float(np.sqrt(np.dot(f64, f64)))
    if hi > lo:
        idx = ((f64 - lo) * (bins / (hi - lo))).astype(np.int64)  # [n_finite] bin of each value
        np.minimum(idx, bins - 1, out=idx)
        hist = np.bincount(idx, minlength=bins)  # [bins]
    else:
        hist = np.zeros(bins, dtype=np.int64)
        hist[bins // 2] = f.size
    return TensorStats(lo, hi, mean, std, norm, n_nan, n_inf, hist)


def tensor_stats(trace, step_index: int, name: str, bins: int = HIST_BINS) -> TensorStats:
    """Statistics of one recorded tensor, computed on first use and cached."""
    step = trace.steps[step_index]
    return cached(step, ("stats", name, bins), lambda: compute_stats(step[name], bins))


def summarize(trace, step_index: int, name: str) -> TensorSummary:
    info = next(i for i in tensor_infos(trace, step_index) if i.name == name)
    return TensorSummary(info, tensor_op(trace, step_index, name), tensor_stats(trace, step_index, name))


# -- browsing -------------------------------------------------------------------------------------


def axis_names(name: str, ndim: int) -> list[str]:
    """Axis names from the documented shape (`[T, n_heads, d_head]`), or dim0, dim1, ..."""
    doc = [a.strip() for a in shape_doc(name).strip("[]").split(",") if a.strip()]
    return doc if len(doc) == ndim else [f"dim{i}" for i in range(ndim)]


def n_leading(shape: tuple[int, ...]) -> int:
    """How many leading indices fix a tensor down to a 2-D (or 1-D) slice."""
    return max(0, len(shape) - 2)


def browse_slice(arr: np.ndarray, lead: tuple[int, ...] = ()) -> np.ndarray:
    """The 2-D (or 1-D, or 0-D promoted to 1-D) slice at the given leading indices (clamped)."""
    k = n_leading(arr.shape)
    idx = tuple(min(max(0, int(i)), arr.shape[a] - 1) for a, i in enumerate(tuple(lead)[:k]))
    idx += (0,) * (k - len(idx))
    out = arr[idx] if idx else arr
    return np.atleast_1d(out)


def clamp_lead(shape: tuple[int, ...], lead: tuple[int, ...]) -> tuple[int, ...]:
    k = n_leading(shape)
    lead = tuple(lead)[:k] + (0,) * max(0, k - len(lead))
    return tuple(min(max(0, int(i)), shape[a] - 1) for a, i in enumerate(lead))


def format_number(x: float, width: int = 10) -> str:
    """A right-aligned number that fits `width` characters (nan/inf spelled out)."""
    if not np.isfinite(x):
        return f"{'nan' if np.isnan(x) else ('+inf' if x > 0 else '-inf'):>{width}}"
    for fmt in ("{:.4f}", "{:.3g}", "{:.2e}"):
        s = fmt.format(x)
        if len(s) <= width and (fmt != "{:.4f}" or 1e-3 <= abs(x) < 1e4 or x == 0):
            return f"{s:>{width}}"
    return f"{x:.1e}"[:width].rjust(width)


def slice_rows(sl: np.ndarray, row0: int = 0, rows: int = 20, col0: int = 0, cols: int = 8,
               width: int = 10) -> list[list[str]]:
    """Formatted numbers of a window of a 2-D (or 1-D, shown as one row) slice."""
    m = sl.reshape(1, -1) if sl.ndim == 1 else sl  # [R, C]
    window = np.asarray(m[row0 : row0 + rows, col0 : col0 + cols], dtype=np.float64)
    return [[format_number(v, width) for v in row] for row in window]


# -- export ---------------------------------------------------------------------------------------


def export_filename(step_index: int, name: str) -> str:
    safe = re.sub(r"[^A-Za-z0-9_.-]", "_", name)
    return f"step{step_index:05d}_{safe}.npy"


def export_npy(step, name: str, path: str | os.PathLike | None = None) -> str:
    """Save one tensor of a `tracer.Step` as `.npy` (no pickle). `path`: a directory (file name
    chosen), a file, or None for the current directory. Returns the written absolute path."""
    path = os.fspath(path) if path is not None else os.getcwd()
    if os.path.isdir(path) or path.endswith(os.sep):
        os.makedirs(path, exist_ok=True)
        path = os.path.join(path, export_filename(step.index, name))
    elif not path.endswith(".npy"):
        path += ".npy"
    arr = np.array(step[name])  # a writable copy of the memory-mapped array
    np.save(path, arr, allow_pickle=False)
    return os.path.abspath(path)
