"""Rows of a prefill attention map, from the file where stored, recomputed where the budget omitted them.

Recomputation (numpy, float32 like the model's eager path): scores = rot_q · rot_kᵀ · scale,
soft-capped where the model caps, causal (and sliding-window) mask, pattern = softmax(scores).
Scale, softcap and window come from the manifest's model facts and config.
"""

from __future__ import annotations

import numpy as np

from .geometry import kv_heads, layer_window
from .trace_format import TraceError

KINDS = {"pattern": "attn.hook_pattern", "scores": "attn.hook_attn_scores"}


def attention_params(facts: dict, layer: int) -> dict:
    """scale, softcap, window (None = full) of a layer, from the model facts."""
    config = facts.get("config") or {}
    scale = facts.get("attn_scale")
    if scale is None:
        scalar = config.get("query_pre_attn_scalar")
        scale = float(scalar) ** -0.5 if scalar else float(facts["d_head"]) ** -0.5
    softcap = facts.get("attn_softcap", config.get("attn_logit_softcapping"))
    return {"scale": float(scale), "softcap": softcap, "window": layer_window(facts, layer)}


def recompute(step, facts: dict | None, layer: int, kind: str, q0: int, q1: int) -> np.ndarray:
    """[n_heads, q1-q0, S] of a prefill step from its recorded rotated q and k (`facts`: the
    manifest's model facts)."""
    start, end = step.positions
    if start != 0:
        raise TraceError(f"step {step.index}: omitted attention rows can be recomputed at the prefill only")
    facts = step.facts or {}
    if facts.get("attention_sink"):  # the manifest fact (tracer/adapters): a sink column q·k cannot give
        raise TraceError(f"step {step.index}: attention with sinks cannot be recomputed from q and k")
    q_name, k_name = f"blocks.{layer}.attn.hook_rot_q", f"blocks.{layer}.attn.hook_rot_k"
    if q_name not in step or k_name not in step:
        raise TraceError(f"step {step.index}: rows of layer {layer} were omitted and hook_rot_q/hook_rot_k were not recorded")
    q = np.asarray(step[q_name][q0:q1], dtype=np.float32)  # [R, n_heads, d_head]
    k = np.asarray(step[k_name], dtype=np.float32)  # [S, n_kv_heads, d_head]
    n_heads, n_kv = q.shape[1], k.shape[1]
    p = attention_params(facts, layer)
    kv_of_head = kv_heads(n_heads, n_kv)  # GQA: query head -> its KV head
    scores = np.einsum("rhd,shd->hrs", q, k[:, kv_of_head, :]) * np.float32(p["scale"])  # [n_heads, R, S]
    if p["softcap"]:
        cap = np.float32(p["softcap"])
        scores = np.tanh(scores / cap) * cap
    rows = np.arange(q0, q1)[:, None]  # query positions (prefill: row = position)
    keys = np.arange(end)[None, :]
    masked = keys > rows
    if p["window"]:
        masked |= rows - keys >= p["window"]
    scores = np.where(masked[None], np.float32(-np.inf), scores).astype(np.float32)
    if kind == "scores":
        return scores
    shifted = scores - scores.max(-1, keepdims=True)
    e = np.exp(shifted)
    return (e / e.sum(-1, keepdims=True)).astype(step.dtype(f"blocks.{layer}.{KINDS[kind]}"))


def rows(step, layer: int, kind: str, q0: int, q1: int) -> np.ndarray:
    """Rows q0..q1 (step-relative query rows) of a layer's map, stored or recomputed (from the
    manifest's model facts, `step.facts`)."""
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {sorted(KINDS)}")
    name = f"blocks.{layer}.{KINDS[kind]}"
    start, end = step.positions
    q0, q1 = max(0, q0), min(end - start, q1)
    stored = step[name]  # [n_heads, kept, S]
    om = step.omitted.get(name)
    if om is None:
        return stored[:, q0:q1]
    r0, r1 = om["rows"]
    out = np.empty((stored.shape[0], max(q1 - q0, 0), stored.shape[2]), dtype=stored.dtype)
    for i, row in enumerate(range(q0, q1)):
        if r0 <= row < r1:
            continue
        out[:, i] = stored[:, row if row < r0 else row - (r1 - r0)]
    lo, hi = max(q0, r0), min(q1, r1)
    if lo < hi:
        out[:, lo - q0 : hi - q0] = recompute(step, step.facts, layer, kind, lo, hi)
    return out
