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

from stepscope.tracer.names import shape_doc
from stepscope.tui.views.cache import cached
from stepscope.tui.views.ops import operation

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


# documented axis symbol -> the name the browser shows
AXIS_LABELS = {
    "T": "position", "S": "key", "n_heads": "head", "n_kv_heads": "kv_head", "d_head": "d_head",
    "d_model": "d_model", "d_mlp": "d_mlp", "vocab": "vocab", "n_layers": "layer", "k": "rank",
    "N": "candidate", "n_experts": "expert", "top_k_experts": "expert_slot", "1": "one",
}
HEAD_AXES = ("head", "kv_head")


def axis_labels(name: str, ndim: int) -> list[str]:
    """Readable axis names of a recorded tensor (`position`, `head`, `d_head`, `key`, `vocab`, …)
    from its documented shape in tracer/names.py; `dim0`, `dim1`, … when unknown."""
    return [AXIS_LABELS.get(a, a) for a in axis_names(name, ndim)]


@dataclass(frozen=True)
class SliceView:
    """Which two axes a browsed tensor shows (rows down, columns across) and the index of every
    other axis. A 1-D tensor shows one row: rows is None."""

    rows: int | None
    cols: int
    index: tuple[int, ...]  # one index per axis; used for the axes not shown

    def fixed(self) -> list[int]:
        """The axes held at an index."""
        return [a for a in range(len(self.index)) if a not in (self.rows, self.cols)]


def axis_pairs(ndim: int) -> list[tuple[int | None, int]]:
    """Every choice of two shown axes (rows < cols), the last two first: what `,`/`.` cycle."""
    if ndim <= 1:
        return [(None, 0)]
    pairs = [(r, c) for r in range(ndim) for c in range(r + 1, ndim)]
    return sorted(pairs, key=lambda rc: (-rc[1], -(rc[0] or 0)))  # (rc[0] is an axis here, never None)


def default_view(name: str, shape: tuple[int, ...], head: int | None = None, kv_head: int | None = None) -> SliceView:
    """The slice a tensor opens on: a head axis held at the selected head (so `hook_q` [T, n_heads,
    d_head] shows that head's [position, d_head]), otherwise the last two axes."""
    ndim = len(shape)
    labels = axis_labels(name, ndim)
    index = [0] * ndim
    shown = [a for a in range(ndim)]
    if ndim >= 3:
        for a, label in enumerate(labels):
            if label in HEAD_AXES:
                chosen = head if label == "head" else kv_head
                index[a] = min(max(0, int(chosen or 0)), shape[a] - 1)
                shown.remove(a)
                break
    shown = shown[-2:] if ndim >= 2 else shown
    rows, cols = (shown[0], shown[1]) if len(shown) == 2 else (None, shown[0] if shown else 0)
    return SliceView(rows, cols, tuple(index))


def with_axes(view: SliceView, pair: tuple[int | None, int]) -> SliceView:
    return SliceView(pair[0], pair[1], view.index)


def with_index(view: SliceView, shape: tuple[int, ...], axis: int, delta: int) -> SliceView:
    """`view` with the index of a held axis moved by `delta` (clamped)."""
    index = list(view.index)
    index[axis] = min(max(0, index[axis] + delta), shape[axis] - 1)
    return SliceView(view.rows, view.cols, tuple(index))


def view_slice(arr: np.ndarray, view: SliceView) -> np.ndarray:
    """[R, C] numbers of the view: the two shown axes (rows first), every other axis at its index."""
    if arr.ndim == 0:
        return np.asarray(arr).reshape(1, 1)
    idx = tuple(slice(None) if a in (view.rows, view.cols) else min(max(0, view.index[a]), arr.shape[a] - 1)
                for a in range(arr.ndim))
    out = np.asarray(arr[idx])  # shown axes remain, in increasing order
    if view.rows is None:
        return out.reshape(1, -1)
    return out.T if view.rows > view.cols else out


def slice_label(name: str, shape: tuple[int, ...], view: SliceView) -> str:
    """`[position :, head 3, d_head :]`: the slice in axis names."""
    labels = axis_labels(name, len(shape))
    parts = [f"{labels[a]} :" if a in (view.rows, view.cols) else f"{labels[a]} {view.index[a]}"
             for a in range(len(shape))]
    return "[" + ", ".join(parts) + "]"


EXPORT_DIR_ENV = "STEPSCOPE_EXPORT_DIR"


def export_dir_for(trace) -> str:
    """Where exports go: $STEPSCOPE_EXPORT_DIR when set, else `<trace directory>-exports` beside
    the trace (`./stepscope-exports` when the trace has no directory)."""
    configured = os.environ.get(EXPORT_DIR_ENV)
    if configured:
        return os.path.abspath(os.path.expanduser(configured))
    path = getattr(trace, "path", None)
    if not path:
        return os.path.join(os.getcwd(), "stepscope-exports")
    path = os.path.abspath(os.fspath(path)).rstrip(os.sep)
    return path + "-exports"


def export_array(arr: np.ndarray, directory: str | os.PathLike, filename: str) -> str:
    """Save an array as `.npy` (no pickle) in `directory` (created); returns the absolute path."""
    directory = os.fspath(directory)
    os.makedirs(directory, exist_ok=True)
    path = os.path.join(directory, filename)
    np.save(path, np.ascontiguousarray(arr), allow_pickle=False)
    return os.path.abspath(path)


def slice_filename(step_index: int, name: str, shape: tuple[int, ...], view: SliceView) -> str:
    """`step00001_blocks.0.attn.hook_q_head3.npy`: the held axes and indices in the name."""
    labels = axis_labels(name, len(shape))
    held = "".join(f"_{labels[a]}{view.index[a]}" for a in view.fixed())
    pair = "" if view.rows is None or view.rows < view.cols else "_T"
    return export_filename(step_index, name)[: -len(".npy")] + held + pair + ".npy"


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
