"""The KV cache at a step: per-layer length before/after, what the step appended, bytes of K/V.

Computed from the manifest (positions, model facts, stored dtype) without reading arrays.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from tui.text import escape_for_display
from tui.views.heatmap import layer_window


@dataclass(frozen=True)
class KVLayer:
    layer: int
    before: int  # cached positions before this step
    after: int  # cached positions after it
    appended: int
    k_bytes: int  # bytes of K after this step (V is the same size)
    v_bytes: int


@dataclass(frozen=True)
class KVCache:
    step: int
    kind: str  # "prefill" | "decode"
    positions: tuple[int, int]  # [start, end) appended by this step
    appended: list[tuple[int, str, bool]]  # (position, escaped text, special)
    layers: list[KVLayer]
    dtype: str
    bytes_per_position: int  # K + V, one layer: 2 · n_kv_heads · d_head · itemsize
    total_bytes: int  # all layers after this step
    sliding_window: int | None  # the model's window (layers listed as full attention ignore it)


def kv_cache(trace, step_index: int) -> KVCache:
    model = trace.model
    step = trace.steps[step_index]
    start, end = step.positions
    dtype = (trace.manifest.get("dtype") or {}).get("stored", "float32")
    itemsize = np.dtype(dtype).itemsize
    n_kv = int(model.get("n_kv_heads") or model["n_heads"])
    d_head = int(model.get("d_head") or model["d_model"] // model["n_heads"])
    per_pos = n_kv * d_head * itemsize  # K or V, one layer, one position
    layers = []
    for layer in range(int(model["n_layers"])):
        window = layer_window(model, layer)
        before, after = (min(start, window), min(end, window)) if window else (start, end)
        layers.append(KVLayer(layer, before, after, end - start, after * per_pos, after * per_pos))
    tokens = trace.tokens
    appended = [(p, escape_for_display(tokens[p]["text"]), bool(tokens[p].get("special")))
                for p in range(start, min(end, len(tokens)))]
    total = sum(row.k_bytes + row.v_bytes for row in layers)
    return KVCache(step_index, step.kind, (start, end), appended, layers, dtype, 2 * per_pos, total,
                   model.get("sliding_window") or None)
