"""Model geometry a reader needs to lay out attention maps and caches, from the manifest's model
facts (numpy only): which KV head a query head reads, a layer's sliding window, where a step's key
columns start, and whether the maps end with an attention-sink column.

    kv_head_of(model, head)        the KV head query head `head` shares (GQA/MQA grouping)
    kv_heads(n_heads, n_kv_heads)  [n_heads] the KV head of every query head
    layer_window(model, layer)     the layer's sliding window, None for full attention
    sink_columns(model)            1 when the maps' last column is the attention sink, else 0
    keys_of(step, model, layer)    (first key position, S) of a step's pattern at a layer
"""

from __future__ import annotations

import numpy as np

from .names import block_name

PATTERN = "attn.hook_pattern"


def kv_heads(n_heads: int, n_kv_heads: int) -> np.ndarray:
    """[n_heads] the KV head each query head reads: head // (n_heads // n_kv_heads)."""
    return np.arange(n_heads) // max(1, n_heads // max(n_kv_heads, 1))


def kv_head_of(model: dict, head: int) -> int:
    """The KV head a query head shares: head // (n_heads // n_kv_heads)."""
    n_heads = int(model["n_heads"])
    n_kv = int(model.get("n_kv_heads") or n_heads)
    return head // max(1, n_heads // n_kv)


def layer_window(model: dict, layer: int) -> int | None:
    """The sliding-window size of a layer, or None for full attention (`layer_types` decides
    per layer when the model alternates, as Gemma 2/3 do)."""
    window = model.get("sliding_window") or None
    types = model.get("layer_types")
    if window and types and layer < len(types) and "sliding" not in str(types[layer]):
        return None
    return int(window) if window else None


def sink_columns(model: dict) -> int:
    """1 when the model's maps end with an attention-sink column (manifest fact), else 0."""
    return 1 if model.get("attention_sink") else 0


def keys_of(step, model: dict, layer: int) -> tuple[int, int]:
    """(first key position, S) of a `tracer.Step`'s pattern at a layer: header only.

    S is the recorded pattern's last axis; when the pattern was not recorded it follows the
    cache rule (a sliding layer keeps window - 1 earlier positions, so S = T + min(start, window - 1)).
    """
    start, end = step.positions
    name = block_name(layer, PATTERN)
    if name in step:
        n_keys = int(step.shape(name)[-1]) - sink_columns(model)
    else:
        window = layer_window(model, layer)
        n_keys = end - start + (min(start, window - 1) if window else start)
    return end - n_keys, n_keys
