"""The KV cache at a step: per-layer length before/after, keys read, what the step appended, bytes of K/V.

Computed from the manifest (positions, model facts, stored dtype) and step-file headers, without
reading arrays. A full-attention layer keeps every position. A sliding-window layer (Mistral,
Gemma's local layers) keeps only the last `window - 1` positions between steps (transformers'
sliding-window cache), so a decode step reads S = min(end, window) keys: those plus its own.
Gemma's global layers keep everything. A layer without attention (manifest
`layers_without_attention`, e.g. a linear-attention block keeping a recurrent state) has no KV cache.
"""

from __future__ import annotations

from dataclasses import dataclass

from stepscope.tracer.geometry import layer_window
from stepscope.tracer.trace_format import STORED_ITEMSIZE
from stepscope.tui.text import escape_for_display
from stepscope.tui.views.heatmap import key_span, no_attention
from stepscope.tui.views.vocab import tok_text


@dataclass(frozen=True)
class KVLayer:
    layer: int
    before: int  # cached positions before this step
    after: int  # cached positions after it
    appended: int
    k_bytes: int  # bytes of K after this step (V is the same size)
    v_bytes: int
    keys: int = 0  # S: key positions this step's queries read (cache + new)
    first_key: int = 0  # position of the first of them
    window: int | None = None  # the layer's sliding window, None for full attention
    dropped: int = 0  # positions this step evicted from the cache (slid out of the window)
    no_attention: str | None = None  # why the layer has no KV cache (it does not attend), else None

    @property
    def kind(self) -> str:
        """"local" (sliding window), "global" (full attention) or "none" (no attention)."""
        return "none" if self.no_attention else "local" if self.window else "global"


@dataclass(frozen=True)
class KVCache:
    step: int
    kind: str  # "prefill" | "decode"
    positions: tuple[int, int]  # [start, end) appended by this step
    appended: list[tuple[int, str, bool]]  # (position, escaped text, special)
    layers: list[KVLayer]
    dtype: str
    bytes_per_position: int  # K + V, one layer: n_kv_heads · (d_head + d_head_v) · itemsize
    total_bytes: int  # all layers after this step
    sliding_window: int | None  # the model's window (layers listed as full attention ignore it)
    no_attention_reason: str | None = None  # why some layers keep no KV cache (manifest), else None

    @property
    def mixed(self) -> bool:
        """Some layers slide and others keep everything (Gemma 2/3)."""
        kinds = {row.kind for row in self.layers}
        return len(kinds) > 1


def cached_length(window: int | None, n_positions: int) -> int:
    """Positions a layer keeps after `n_positions` have been computed."""
    return min(n_positions, window - 1) if window else n_positions


def kv_cache(trace, step_index: int) -> KVCache:
    model = trace.model
    step = trace.steps[step_index]
    start, end = step.positions
    dtype = (trace.manifest.get("dtype") or {}).get("stored", "float32")
    itemsize = STORED_ITEMSIZE.get(dtype, 4)
    n_kv = int(model.get("n_kv_heads") or model["n_heads"])
    d_head = int(model.get("d_head") or model["d_model"] // model["n_heads"])
    per_pos = n_kv * d_head * itemsize  # K, one layer, one position
    v_per_pos = n_kv * int(model.get("d_head_v") or d_head) * itemsize  # V (MLA: its own head size, fact d_head_v)
    layers = []
    for layer in range(int(model["n_layers"])):
        reason = no_attention(model, layer)
        if reason is not None:
            layers.append(KVLayer(layer, 0, 0, 0, 0, 0, no_attention=reason))
            continue
        window = layer_window(model, layer)
        before, after = cached_length(window, start), cached_length(window, end)
        first, n_keys = key_span(trace, step_index, layer)
        dropped = before + (end - start) - after
        layers.append(KVLayer(layer, before, after, end - start, after * per_pos, after * v_per_pos,
                              n_keys, first, window, dropped))
    tokens = trace.tokens
    appended = [(p, escape_for_display(tok_text(tokens[p])), bool(tokens[p].get("special")))
                for p in range(start, min(end, len(tokens)))]
    total = sum(row.k_bytes + row.v_bytes for row in layers)
    reasons = [row.no_attention for row in layers if row.no_attention]
    return KVCache(step_index, step.kind, (start, end), appended, layers, dtype, per_pos + v_per_pos, total,
                   model.get("sliding_window") or None, reasons[0] if reasons else None)
