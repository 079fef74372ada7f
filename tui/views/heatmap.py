"""The attention matrix a heatmap shows: one layer/head of one step, windowed, optionally stacked.

Prefill: the full [T, S] pattern with the causal mask. Decode step: the single new row [1, S].
On a sliding-window layer the KV cache keeps only the window, so a decode step's S = min(end,
window) and key column j is position `end - S + j` (`key_span`). `stack=True` at step i: the rows
of steps 0..i stacked into one matrix over all positions so far (columns = absolute positions),
reading only the rows inside the viewport (one step file per visible row). Cells are masked by
the causal mask (key after the query) or by the window (key older than `window` positions),
told apart in `window_mask`.

Model facts from the manifest, never the family: with `attention_sink` the map's last column is
the sink (the mass the head puts on no key), kept apart from the key columns (`AttentionMap.sink`);
a layer in `layers_without_attention` has no map (`no_attention`, saying why). Rows the recording
budget left out (`step.omitted`) are recomputed exactly from the recorded rotated q and k
(`step.attention_rows`) and marked (`AttentionMap.recomputed`).
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass

import numpy as np

from stepscope.tracer.geometry import keys_of, kv_head_of, layer_window, sink_columns
from stepscope.tracer.names import block_name
from stepscope.tui.views.cache import cached
from stepscope.tui.views.vocab import token_texts

PATTERN = "attn.hook_pattern"
SCORES = "attn.hook_attn_scores"

# zoom levels, most zoomed in first: (characters per key column, data cells pooled per drawn cell)
ZOOMS: tuple[tuple[int, int], ...] = ((4, 1), (3, 1), (2, 1), (1, 1), (1, 2), (1, 4), (1, 8), (1, 16), (1, 32),
                                       (1, 64), (1, 128), (1, 256))
SCALES = ("map", "fixed", "log")  # colour scale: this map's maximum, fixed 0–1, log10 over [LOG_FLOOR, 1]
LOG_FLOOR = 1e-4


def zoom_label(level: int) -> str:
    """`×3` for a zoomed-in level, `1/4` for a pooled one."""
    cell, pool = ZOOMS[level]
    return f"×{cell}" if pool == 1 else f"1/{pool}"


def fit_zoom(n_rows: int, n_cols: int, height: int, width: int, wrap: bool = False) -> int:
    """The most zoomed-in level whose drawing of an n_rows × n_cols map fits height lines × width
    cells (one line per drawn row; `wrap`: a single row may wrap over the lines)."""
    for level, (cell, pool) in enumerate(ZOOMS):
        rows, cols = -(-n_rows // pool), -(-n_cols // pool) * cell
        lines = rows * -(-cols // max(width, 1)) if wrap else rows
        if lines <= height and (wrap or cols <= width):
            return level
    return len(ZOOMS) - 1


@dataclass(frozen=True)
class Viewport:
    """A window of a matrix in data coordinates: first row/column and how many of each."""

    row0: int = 0
    col0: int = 0
    rows: int = 32
    cols: int = 64

    def clamp(self, n_rows: int, n_cols: int) -> Viewport:
        """Fit inside an n_rows × n_cols matrix (a window larger than the data shows all of it)."""
        rows, cols = max(1, min(self.rows, n_rows)), max(1, min(self.cols, n_cols))
        row0 = min(max(0, self.row0), max(0, n_rows - rows))
        col0 = min(max(0, self.col0), max(0, n_cols - cols))
        return Viewport(row0, col0, rows, cols)

    def moved(self, drow: int, dcol: int) -> Viewport:
        return Viewport(self.row0 + drow, self.col0 + dcol, self.rows, self.cols)


@dataclass
class AttentionMap:
    """What the heatmap draws: a window of attention weights, its mask and its labels."""

    values: np.ndarray  # [R, C] float32 attention weights (0 where masked)
    mask: np.ndarray  # [R, C] bool, True where the key is not attended (causal or sliding window)
    row_positions: list[int]  # query position of each row (first of its block when pooled)
    col_positions: list[int]  # key position of each column (absolute, also on sliding layers)
    row_labels: list[str]  # escaped query token texts
    col_labels: list[str]  # escaped key token texts
    n_rows: int  # extent of the whole matrix
    n_cols: int
    viewport: Viewport  # the clamped window, data coordinates
    pool: int  # data cells per drawn cell along each axis (zoomed out when > 1)
    vmin: float
    vmax: float  # colour scale maximum (largest attended weight in the window)
    step: int
    kind: str  # "prefill" | "decode"
    layer: int
    head: int
    kv_head: int  # the KV head this query head reads (GQA/MQA)
    stacked: bool
    window_mask: np.ndarray | None = None  # [R, C] bool, the masked cells outside the sliding window
    window: int | None = None  # the layer's sliding window, None for full attention
    first_key: int = 0  # position of data column 0 (end - S on a sliding layer's decode step)
    scale: str = "map"  # colour scale mode (SCALES)
    row_names: list[str] | None = None  # row label: "12 ·Paris" (one query), "12–15" when pooled
    col_names: list[str] | None = None  # column label in full: "k 12 ·Paris", "k 12–15" when pooled
    sink: np.ndarray | None = None  # [R] mass on the attention sink (pooled: block maximum), when the model has one
    recomputed: tuple[int, int] | None = None  # query positions [q0, q1) drawn from rows the budget omitted


def _names(positions: list[int], labels: list[str], pool: int, last: int, prefix: str = "") -> list[str]:
    """Position labels: `12 ·Paris` for one position, `12–15` for a pooled block (ends at `last`)."""
    if pool == 1:
        return [f"{prefix}{p} {lab}" for p, lab in zip(positions, labels)]
    return [f"{prefix}{p}–{min(p + pool - 1, last)}" for p in positions]


def no_attention(model: dict, layer: int) -> str | None:
    """Why a layer has no attention map (manifest facts, inert since the reader), or None when it has one."""
    if layer in (model.get("layers_without_attention") or ()):
        return model.get("no_attention_reason") or "this layer does not attend (no attention map)"
    return None


def omitted_rows(step, layer: int) -> tuple[int, int] | None:
    """[q0, q1) absolute query positions of the layer's pattern the budget did not store, or None."""
    info = (getattr(step, "omitted", None) or {}).get(block_name(layer, PATTERN))
    if not info:
        return None
    start = step.positions[0]
    r0, r1 = info["rows"]
    return (start + int(r0), start + int(r1)) if r1 > r0 else None


def map_rows(step, layer: int, kind: str, q0: int, q1: int) -> np.ndarray:
    """[n_heads, q1-q0, S(+sink)] float32 rows q0..q1 (step-relative) of a map, recomputed exactly
    where the budget omitted them (raises TraceError when they cannot be)."""
    name = block_name(layer, PATTERN if kind == "pattern" else SCORES)
    if name not in (getattr(step, "omitted", None) or {}):
        return np.asarray(step[name][:, q0:q1], dtype=np.float32)
    return cached(step, ("map_rows", layer, kind, q0, q1),
                  lambda: np.asarray(step.attention_rows(layer, kind, q0, q1), dtype=np.float32))


def key_span(trace, step_index: int, layer: int) -> tuple[int, int]:
    """(first key position, S) of a step at a layer (see `keys_of`)."""
    return keys_of(trace.steps[step_index], trace.model, layer)


def extent(trace, step_index: int, stack: bool = False, layer: int | None = None) -> tuple[int, int]:
    """(rows, cols) of the whole matrix at a step (manifest and header only).

    Without `layer` the columns are every position so far; with it, a decode step of a sliding
    layer has only the window's S columns.
    """
    start, end = trace.steps[step_index].positions
    if stack:
        return end, end
    if layer is None:
        return end - start, end
    return end - start, key_span(trace, step_index, layer)[1]


def _masks(q_pos: np.ndarray, k_pos: np.ndarray, window: int | None) -> tuple[np.ndarray, np.ndarray]:
    """([R, C] masked, [R, C] outside the window): k > q (causal) or k <= q - window (window)."""
    causal = k_pos[None, :] > q_pos[:, None]  # [R, C]
    if not window:
        return causal, np.zeros_like(causal)
    outside = k_pos[None, :] <= q_pos[:, None] - window  # [R, C]
    return causal | outside, outside


def _pool(values: np.ndarray, mask: np.ndarray, outside: np.ndarray,
          pool: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Block maximum over pool × pool cells; a block is masked only when all its cells are, and
    outside the window when it is masked and any of its cells is."""
    if pool <= 1:
        return values, mask, outside
    r, c = values.shape
    rp, cp = -(-r // pool), -(-c // pool)
    v = np.full((rp * pool, cp * pool), -np.inf, dtype=np.float32)  # [R', C'] padded
    m = np.ones((rp * pool, cp * pool), dtype=bool)  # [R', C']
    w = np.zeros((rp * pool, cp * pool), dtype=bool)  # [R', C']
    v[:r, :c] = np.where(mask, -np.inf, values)
    m[:r, :c] = mask
    w[:r, :c] = outside
    v = v.reshape(rp, pool, cp, pool).max(axis=(1, 3))  # [rp, cp]
    m = m.reshape(rp, pool, cp, pool).all(axis=(1, 3))  # type: ignore[assignment]  # [rp, cp] (numpy's stubs: a scalar or an array)
    w = m & w.reshape(rp, pool, cp, pool).any(axis=(1, 3))  # [rp, cp]
    return np.where(m, 0.0, v).astype(np.float32), m, w


class _StepStarts:
    """Start positions of the first n steps, read lazily from the manifest (for bisect)."""

    def __init__(self, trace, n: int):
        self._entries, self._n = trace.manifest["steps"], n

    def __len__(self) -> int:
        return self._n

    def __getitem__(self, i: int) -> int:
        return int(self._entries[i]["positions"][0])


def _step_of_position(trace, last_step: int, position: int) -> int:
    """The step (<= last_step) that computed a query position: O(log steps), manifest only."""
    return bisect.bisect_right(_StepStarts(trace, last_step + 1), position) - 1


def _full_row(step, layer: int, kind: str, head: int, q: int) -> np.ndarray:
    """[S(+sink)] float32 row of query position q of one head ("pattern" or "scores"), recomputed
    where the budget omitted it; cached: a step's rows never change."""
    r = q - step.positions[0]
    return cached(step, ("full_row", layer, kind, head, q), lambda: map_rows(step, layer, kind, r, r + 1)[head, 0].copy())


def _pattern_row(step, model: dict, layer: int, head: int, q: int, kind: str = "pattern") -> np.ndarray:
    """[S] the key columns of a row (the sink column, if any, left out)."""
    row = _full_row(step, layer, kind, head, q)
    return row[: row.shape[0] - sink_columns(model)]


def _read_rows(trace, step_index: int, layer: int, head: int, vp: Viewport,
               stack: bool) -> tuple[np.ndarray, np.ndarray | None] | None:
    """([rows, cols] float32 weights of the window, [rows] sink mass or None); None when the
    pattern was not recorded.

    Stacked, column c is position c: the row of query q (computed by step j) is placed from
    step j's first key position (end_j - S_j on a sliding layer).
    """
    name = block_name(layer, PATTERN)
    step = trace.steps[step_index]
    sink = sink_columns(trace.model)
    if not stack:
        if name not in step:
            return None
        block = map_rows(step, layer, "pattern", vp.row0, vp.row0 + vp.rows)[head]  # [rows, S(+sink)]
        n_keys = block.shape[1] - sink
        values = block[:, vp.col0 : min(vp.col0 + vp.cols, n_keys)]  # [rows, cols]
        return values, (block[:, -1].copy() if sink else None)
    out = np.zeros((vp.rows, vp.cols), dtype=np.float32)  # [rows, cols]
    sinks = np.zeros(vp.rows, dtype=np.float32) if sink else None  # [rows]
    found = False
    for r, q in enumerate(range(vp.row0, vp.row0 + vp.rows)):
        j = _step_of_position(trace, step_index, q)
        src = trace.steps[j]
        if name not in src:
            continue
        first, n_keys = key_span(trace, j, layer)
        lo, hi = max(vp.col0, first), min(vp.col0 + vp.cols, first + n_keys)  # visible key positions
        if lo < hi:
            row = _pattern_row(src, trace.model, layer, head, q)  # [S_j] keys first..first + S_j - 1
            out[r, lo - vp.col0 : hi - vp.col0] = row[lo - first : hi - first]
        if sinks is not None:
            sinks[r] = _full_row(src, layer, "pattern", head, q)[-1]
        found = True
    return (out, sinks) if found else None


def _labels(trace, positions: list[int]) -> list[str]:
    """Escaped token texts of positions ("" past the tokens), cached per trace position."""
    n, label = len(trace.tokens), token_texts(trace).label
    return [label(p) if 0 <= p < n else "" for p in positions]


def attention_map(trace, step_index: int, layer: int, head: int, *, stack: bool = False,
                  viewport: Viewport | None = None, pool: int = 1, scale: str = "map") -> AttentionMap | None:
    """The window of layer/head attention at a step; None when `attn.hook_pattern` was not recorded.

    `viewport` is in data coordinates and is clamped; `pool` > 1 zooms out (block maximum);
    `scale` (SCALES) sets vmin/vmax: the window's largest weight, or 0–1 for "fixed" and "log".
    """
    step = trace.steps[step_index]
    start, end = step.positions
    stacked, pool = bool(stack), max(1, int(pool))
    n_rows, n_cols = extent(trace, step_index, stacked, layer)
    vp = (viewport or Viewport(rows=n_rows, cols=n_cols)).clamp(n_rows, n_cols)
    read = _read_rows(trace, step_index, layer, head, vp, stacked)
    if read is None:
        return None
    raw, sink = read
    first_query = 0 if stacked else start
    first_key = 0 if stacked else key_span(trace, step_index, layer)[0]
    window = layer_window(trace.model, layer)
    q_pos = np.arange(first_query + vp.row0, first_query + vp.row0 + raw.shape[0])  # [R]
    k_pos = np.arange(first_key + vp.col0, first_key + vp.col0 + raw.shape[1])  # [C]
    mask, outside = _masks(q_pos, k_pos, window)  # [R, C] each
    values, mask, outside = _pool(np.nan_to_num(raw, nan=0.0), mask, outside, pool)
    if sink is not None and pool > 1:  # a pooled block of rows: the largest sink mass in it
        padded = np.full(-(-sink.shape[0] // pool) * pool, -np.inf, dtype=np.float32)  # [R']
        padded[: sink.shape[0]] = sink
        sink = padded.reshape(-1, pool).max(axis=1)  # [R' / pool]
    attended = values[~mask]
    vmax = float(attended.max()) if attended.size else 1.0
    rows = [int(p) for p in q_pos[::pool]]
    cols = [int(p) for p in k_pos[::pool]]
    if scale in ("fixed", "log"):
        vmax = 1.0
    row_labels, col_labels = _labels(trace, rows), _labels(trace, cols)
    return AttentionMap(
        values=values, mask=mask, row_positions=rows, col_positions=cols,
        row_labels=row_labels, col_labels=col_labels,
        n_rows=n_rows, n_cols=n_cols, viewport=vp, pool=pool, vmin=0.0,
        vmax=vmax if vmax > 0 else 1.0, step=step_index, kind=step.kind, layer=layer, head=head,
        kv_head=kv_head_of(trace.model, head), stacked=stacked, window_mask=outside, window=window,
        first_key=first_key, scale=scale if scale in SCALES else "map",
        row_names=_names(rows, row_labels, pool, int(q_pos[-1])),
        col_names=_names(cols, col_labels, pool, int(k_pos[-1]), "k "),
        sink=None if sink is None else np.nan_to_num(sink, nan=0.0).astype(np.float32),
        recomputed=_recomputed(trace, step_index, layer, stacked, int(q_pos[0]), int(q_pos[-1]) + 1),
    )


def _recomputed(trace, step_index: int, layer: int, stacked: bool, q0: int, q1: int) -> tuple[int, int] | None:
    """[q0, q1) of the drawn query positions whose rows the budget omitted (recomputed), or None."""
    steps = (range(_step_of_position(trace, step_index, q0), _step_of_position(trace, step_index, q1 - 1) + 1)
             if stacked else (step_index,))
    for j in steps:
        rows = omitted_rows(trace.steps[j], layer)
        if rows is not None and rows[0] < q1 and q0 < rows[1]:
            return max(rows[0], q0), min(rows[1], q1)
    return None


@dataclass(frozen=True)
class CellInfo:
    """One attention cell explained: who attends to whom, how much, and where it ranks."""

    query: int  # query position
    query_text: str  # escaped token text
    key: int  # key position
    key_text: str
    weight: float | None  # pattern value (None: masked)
    score: float | None  # pre-softmax scaled score, when `attn.hook_attn_scores` was recorded
    rank: int | None  # 1-based rank of this key in the query's row, by weight (None: masked)
    n_keys: int  # keys the query attends
    sink: float | None = None  # mass of the query's row on the attention sink (models with one)
    recomputed: bool = False  # the row was omitted by the recording budget and recomputed from q, k

    def line(self) -> str:
        """The readout line: `q 7 ·Paris → k 2 ·capital · p 0.412 · score 3.12 · rank 1/8`."""
        tail = ("" if self.sink is None else f" · sink {self.sink:.4f}") + (" · recomputed" if self.recomputed else "")
        if self.weight is None:
            return f"q {self.query} {self.query_text} → k {self.key} {self.key_text} · masked (not attended){tail}"
        score = "" if self.score is None else f" · score {self.score:.4g}"
        return (f"q {self.query} {self.query_text} → k {self.key} {self.key_text} · p {self.weight:.4f}{score}"
                f" · rank {self.rank}/{self.n_keys}{tail}")


def _query_row(trace, step_index: int, layer: int, head: int, query: int, name: str) -> np.ndarray | None:
    """[S] key columns of `name`'s row for one query position of the step that computed it (or None)."""
    step = trace.steps[step_index]
    if block_name(layer, name) not in step:
        return None
    return _pattern_row(step, trace.model, layer, head, query, "pattern" if name == PATTERN else "scores")


def default_key(trace, step_index: int, layer: int, head: int, query: int) -> int:
    """The key position a query attends most (the query itself when its row was not recorded)."""
    end = trace.steps[step_index].positions[1]
    if not 0 <= query < end:
        return max(0, min(query, end - 1))
    j = _step_of_position(trace, step_index, query) if query < trace.steps[step_index].positions[0] else step_index
    row = _query_row(trace, j, layer, head, query, PATTERN)  # [S_j]
    if row is None or not row.size:
        return query
    return key_span(trace, j, layer)[0] + int(np.argmax(row))


def cell_info(trace, step_index: int, layer: int, head: int, query: int, key: int) -> CellInfo | None:
    """The cell at query/key positions (absolute) of layer/head, read from the step that computed
    the query; None when the pattern was not recorded or the positions are outside the trace."""
    end = trace.steps[step_index].positions[1]
    if not (0 <= query < end and 0 <= key < end):
        return None
    j = _step_of_position(trace, step_index, query) if query < trace.steps[step_index].positions[0] else step_index
    row = _query_row(trace, j, layer, head, query, PATTERN)  # [S_j]
    if row is None:
        return None
    first = key_span(trace, j, layer)[0]
    window = layer_window(trace.model, layer)
    texts = _labels(trace, [query, key])
    sink = float(_full_row(trace.steps[j], layer, "pattern", head, query)[-1]) if sink_columns(trace.model) else None
    rows = omitted_rows(trace.steps[j], layer)
    recomputed = rows is not None and rows[0] <= query < rows[1]
    masked = key > query or key < first or (window is not None and key <= query - window)
    if masked or key - first >= row.shape[0]:
        return CellInfo(query, texts[0], key, texts[1], None, None, None, int(np.count_nonzero(row > 0)),
                        sink, recomputed)  # masked
    weight = float(row[key - first])
    scores = _query_row(trace, j, layer, head, query, SCORES)
    score = None if scores is None else float(scores[key - first])
    attended = row[: query - first + 1]  # [keys up to the query]
    rank = int(np.count_nonzero(attended > weight)) + 1
    n_keys = min(attended.shape[0], window) if window else attended.shape[0]
    return CellInfo(query, texts[0], key, texts[1], weight, score, rank, int(n_keys), sink, recomputed)
