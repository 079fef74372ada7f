"""The traced attention function, registered with transformers as the "stepscope" implementation.

Why this and not hooks on the attention weights: SDPA and flash kernels never materialise the
pattern, and recomputing it afterwards could differ from what the model used. Here the model's
attention *is* this function: an eager computation (fp32 softmax, like transformers' eager path)
whose scores, pattern and output are recorded as they are used. Masks come from transformers'
own eager mask builder, so causal, padding and sliding-window masks are the model's real ones.
Cost: eager attention instead of SDPA (measured in bench/trace_overhead.py).

What real models pass is handled: query/key and value head sizes that differ (DeepSeek MLA),
attention sinks (gpt-oss: `s_aux`/`sinks`, or a `sinks` parameter on the module), soft-capping,
sliding windows, scaling overrides, a missing mask on a causal module. What it cannot reproduce
exactly (a position bias, sparse key indices, dropout in training mode) is refused with one line.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable
from typing import Protocol

import torch
from torch.nn import functional as F
from transformers import AttentionInterface
from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, AttentionMaskInterface

from .adapters.base import UnsupportedModel


class AttentionRecorder(Protocol):
    """What the traced attention hands its tensors to (the recorder of the module's model)."""

    def attention(self, module, query, key, value, scores, pattern, z) -> None: ...

    def map_rows(self, module, t: int) -> int:
        """How many last query rows of the maps over `t` positions it keeps (0: none)."""
        ...


# What the traced attention does besides attending, per attention module, kept here rather than on the
# modules: the Recorder that takes its tensors, and the interventions' edit of its head outputs z.
RECORDERS: weakref.WeakKeyDictionary[torch.nn.Module, AttentionRecorder] = weakref.WeakKeyDictionary()
Z_EDITS: weakref.WeakKeyDictionary[torch.nn.Module, Callable[[torch.Tensor], torch.Tensor]] = weakref.WeakKeyDictionary()

IMPLEMENTATION = "stepscope"
_REGISTERED = False

# keyword arguments that change the attention arithmetic in ways this function does not reproduce
_REFUSED = {
    "position_bias": "an additive position bias (T5-style relative attention)",
    "indices": "sparse key selection (DeepSeek sparse attention indices)",
    "block_indices": "block-sparse key selection",
    "head_mask": "a per-head mask",
    "cu_seq_lens_q": "packed sequences (cu_seq_lens), which only varlen kernels separate",
}


class AttentionNotReproducible(UnsupportedModel):
    """The model asks the attention function for something it cannot compute exactly."""


def _refuse(module: torch.nn.Module, what: str) -> None:
    raise AttentionNotReproducible(
        f"stepscope cannot record the attention of {type(module).__name__}: it uses {what}, which the traced "
        "attention does not reproduce exactly"
    )


def _check_supported(module, dropout: float, kwargs: dict) -> None:
    for key, what in _REFUSED.items():
        if kwargs.get(key) is not None:
            _refuse(module, what)
    if dropout and module.training:
        _refuse(module, f"attention dropout ({dropout}) in training mode (call model.eval())")


def _causal_mask(t: int, s: int, window: int | None, device) -> torch.Tensor:
    """[1, 1, T, S] bool (True = attend): the T queries are the last T of the S key positions."""
    q_pos = torch.arange(s - t, s, device=device)[:, None]  # [T, 1]
    k_pos = torch.arange(s, device=device)[None, :]  # [1, S]
    ok = k_pos <= q_pos
    if window:
        ok &= k_pos > q_pos - window
    return ok[None, None]


_mask_cache: tuple = (None, 0, (None, None))  # (mask tensor, S, parts), replaced whole: every layer of a forward gets the same mask


def _mask_parts(attention_mask: torch.Tensor, s: int) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """(masked [B, 1, T, S] bool or None when no key is masked, additive float mask or None when it
    is all zeros or boolean), worked out once per mask tensor: a forward hands the same mask to
    every layer. The cache holds the mask itself, so an identical object is the same mask (a
    block of rows, tracer/attention.py's long-prompt path, is a new slice each time: not cached)."""
    global _mask_cache
    cached, cached_s, parts = _mask_cache  # one read: another thread may replace it
    if cached is attention_mask and cached_s == s:
        return parts
    mask = attention_mask[:, :, :, :s]
    masked: torch.Tensor | None
    if mask.dtype == torch.bool:
        masked, additive = ~mask, None
    else:
        masked = mask <= torch.finfo(mask.dtype).min / 2
        additive = mask if bool(mask.any()) else None  # + 0.0 changes no score
    if not bool(masked.any()):
        masked = None
    _mask_cache = (attention_mask, s, (masked, additive))
    return masked, additive


def stepscope_attention(
    module: torch.nn.Module,
    query: torch.Tensor,  # [B, n_heads, T, d_head] (after RoPE / q-norm where the family has them)
    key: torch.Tensor,  # [B, n_kv_heads, S, d_head] (cache + new)
    value: torch.Tensor,  # [B, n_kv_heads, S, d_v] (d_v may differ from d_head: DeepSeek MLA)
    attention_mask: torch.Tensor | None,  # [B, 1, T, S] additive float or boolean (True = attend)
    scaling: float | None = None,
    dropout: float = 0.0,
    softcap: float | None = None,
    **kwargs,
):
    """Eager attention that hands q, k, v, scores, pattern and z to the module's recorder.

    With attention sinks the recorded scores and pattern carry one more key column, the last:
    the sink's logit and the probability mass it absorbed (the manifest says so).
    """
    _check_supported(module, dropout, kwargs)
    b, n_heads, t, d = query.shape
    s = key.shape[2]
    if scaling is None:
        scaling = d**-0.5
    if attention_mask is None and kwargs.get("is_causal", getattr(module, "is_causal", False)) and t > 1:
        attention_mask = _causal_mask(t, s, kwargs.get("sliding_window"), query.device)  # [1, 1, T, S]
    rows = _block_rows(b * n_heads, t, s, query.element_size()) if t > 1 else t
    if rows < t:
        return _attention_in_blocks(module, query, key, value, attention_mask, scaling, softcap, rows, kwargs)
    return _attention(module, query, key, value, attention_mask, scaling, softcap, kwargs)


BLOCK_BYTES = 64 << 20  # a map over a long prompt is computed this many bytes of scores at a time


def _block_rows(maps: int, t: int, s: int, itemsize: int) -> int:
    """Query rows per block: all of them while one [B·n_heads, T, S] map is at most 2·BLOCK_BYTES,
    else a multiple of 64 rows whose map is about BLOCK_BYTES."""
    row = maps * s * max(itemsize, 4)  # the softmax runs in float32
    if t * row <= 2 * BLOCK_BYTES:
        return t
    return max(64, BLOCK_BYTES // row // 64 * 64)


def _attention_in_blocks(module, query, key, value, attention_mask, scaling, softcap, rows, kwargs):
    """The same computation a block of query rows at a time (softmax is per row: each block is
    exactly its rows of the whole), so a long prompt never holds a whole [n_heads, T, S] map: the
    recorder gets only the last rows of the maps it keeps (`map_rows`), and the function returns
    no attention weights."""
    t = query.shape[2]
    recorder = RECORDERS.get(module)
    keep = recorder.map_rows(module, t) if recorder is not None else 0
    zs, scores_kept, pattern_kept = [], [], []
    for start in range(0, t, rows):
        end = min(t, start + rows)
        mask = attention_mask
        if mask is not None and mask.dim() == 4 and mask.shape[2] == t:  # else it broadcasts over the rows
            mask = mask[:, :, start:end]
        z, _, scores, pattern = _attend(module, query[:, :, start:end], key, value, mask, scaling, softcap, kwargs,
                                        record=end > t - keep)
        zs.append(z)
        if end > t - keep:
            first = max(0, t - keep - start)
            scores_kept.append(scores[:, :, first:])
            pattern_kept.append(pattern[:, :, first:])
    z = torch.cat(zs, dim=1)  # [B, T, n_heads, d_v]
    edit = Z_EDITS.get(module)
    if edit is not None:
        z = edit(z)
    if recorder is not None:
        maps = (torch.cat(scores_kept, dim=2), torch.cat(pattern_kept, dim=2)) if keep else (None, None)
        recorder.attention(module, query, key, value, maps[0], maps[1], z)
    return z, None


def _attention(module, query, key, value, attention_mask, scaling, softcap, kwargs):
    """All query rows at once: (z [B, T, n_heads, d_v], the attention weights)."""
    z, attended, scores, pattern = _attend(module, query, key, value, attention_mask, scaling, softcap, kwargs, record=True)
    edit = Z_EDITS.get(module)  # interventions on head outputs (tracer/interventions.py)
    if edit is not None:
        z = edit(z)  # [B, T, n_heads, d_v]
    recorder = RECORDERS.get(module)
    if recorder is not None:
        recorder.attention(module, query, key, value, scores, pattern, z)
    return z, attended


def _attend(module, query, key, value, attention_mask, scaling, softcap, kwargs, record):
    """(z [B, t, n_heads, d_v], attended [B, n_heads, t, S], scores (with -inf at masked keys when
    `record` and the module has a recorder), pattern) of the query rows `query` [B, n_heads, t,
    d_head] against every key; `attention_mask` holds the same rows."""
    b, n_heads, t, d = query.shape
    n_kv, s = key.shape[1], key.shape[2]
    d_v = value.shape[-1]
    n_rep = n_heads // n_kv  # query heads served by each KV head (GQA/MQA); no copy of K/V
    # GQA without copying K/V: each KV head's rep query heads are one [rep * T, d] matrix
    q = query.reshape(b * n_kv, n_rep * t, d)  # [B·n_kv, rep·T, d_head]
    scores = torch.bmm(q, key.reshape(b * n_kv, s, d).transpose(1, 2)) * scaling  # [B·n_kv, rep·T, S]
    scores = scores.view(b, n_heads, t, s)  # [B, n_heads, T, S]
    if softcap is not None:
        scores = torch.tanh(scores / softcap) * softcap
    masked = None
    if attention_mask is not None:
        masked, additive = _mask_parts(attention_mask, s)  # [B, 1, T, S] or None (nothing masked)
        if additive is not None:
            scores = scores + additive
        elif masked is not None:
            scores = scores.masked_fill(masked, torch.finfo(scores.dtype).min)
    sinks = kwargs.get("s_aux")
    if sinks is None:
        sinks = kwargs.get("sinks")
    if sinks is None:
        sinks = getattr(module, "sinks", None)
    if sinks is not None:  # attention sinks (gpt-oss): one extra logit per head, its mass dropped from z
        sink = sinks.reshape(1, -1, 1, 1).expand(b, -1, t, 1).to(scores.dtype)  # [B, n_heads, T, 1]
        scores = torch.cat([scores, sink], dim=-1)  # [B, n_heads, T, S + 1]
        if masked is not None:
            masked = F.pad(masked.expand(b, -1, t, s), (0, 1), value=False)  # the sink is never masked
    pattern = F.softmax(scores, dim=-1, dtype=torch.float32)  # [B, n_heads, T, S (+1)]
    if pattern.dtype != query.dtype:
        pattern = pattern.to(query.dtype)
    attended = pattern[..., :s] if sinks is not None else pattern  # [B, n_heads, T, S] without the sink column
    p = attended.reshape(b * n_kv, n_rep * t, s)  # [B·n_kv, rep·T, S]
    z = torch.bmm(p, value.reshape(b * n_kv, s, d_v)).view(b, n_heads, t, d_v)  # [B, n_heads, T, d_v]
    z = z.transpose(1, 2).contiguous()  # [B, T, n_heads, d_v]
    if record and masked is not None and RECORDERS.get(module) is not None:
        scores = scores.masked_fill(masked, float("-inf"))
    return z, attended, scores, pattern


def register() -> None:
    """Register the "stepscope" attention and its (eager) mask builder with transformers. Idempotent."""
    global _REGISTERED
    if _REGISTERED:
        return
    AttentionInterface.register(IMPLEMENTATION, stepscope_attention)
    AttentionMaskInterface.register(IMPLEMENTATION, ALL_MASK_ATTENTION_FUNCTIONS["eager"])
    _REGISTERED = True
