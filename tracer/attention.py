"""The traced attention function, registered with transformers as the "stepscope" implementation.

Why this and not hooks on the attention weights: SDPA and flash kernels never materialise the
pattern, and recomputing it afterwards could differ from what the model used. Here the model's
attention *is* this function: an eager computation (fp32 softmax, like transformers' eager path)
whose scores, pattern and output are recorded as they are used. Masks come from transformers'
own eager mask builder, so causal, padding and sliding-window masks are the model's real ones.
Cost: eager attention instead of SDPA (measured in bench/trace_overhead.py).
"""

from __future__ import annotations

import torch
from torch.nn import functional as F

IMPLEMENTATION = "stepscope"
_REGISTERED = False


def stepscope_attention(
    module: torch.nn.Module,
    query: torch.Tensor,  # [B, n_heads, T, d_head] (after RoPE / q-norm where the family has them)
    key: torch.Tensor,  # [B, n_kv_heads, S, d_head] (cache + new)
    value: torch.Tensor,  # [B, n_kv_heads, S, d_head]
    attention_mask: torch.Tensor | None,  # [B, 1, T, S] additive float or boolean (True = attend)
    scaling: float | None = None,
    dropout: float = 0.0,
    softcap: float | None = None,
    **kwargs,
):
    """Eager attention that hands q, k, v, scores, pattern and z to the module's recorder."""
    b, n_heads, t, d = query.shape
    n_kv = key.shape[1]
    n_rep = n_heads // n_kv  # query heads served by each KV head (GQA/MQA); no copy of K/V
    if scaling is None:
        scaling = d**-0.5
    q = query.reshape(b, n_kv, n_rep, t, d)  # [B, n_kv, rep, T, d_head]
    scores = torch.matmul(q, key.unsqueeze(2).transpose(-1, -2)) * scaling  # [B, n_kv, rep, T, S]
    scores = scores.reshape(b, n_heads, t, -1)  # [B, n_heads, T, S]
    if softcap is not None:
        scores = torch.tanh(scores / softcap) * softcap
    masked = None
    if attention_mask is not None:
        mask = attention_mask[:, :, :, : key.shape[-2]]
        if mask.dtype == torch.bool:
            masked = ~mask  # [B, 1, T, S]
            scores = scores.masked_fill(masked, torch.finfo(scores.dtype).min)
        else:
            scores = scores + mask
            masked = mask <= torch.finfo(mask.dtype).min / 2
    sinks = getattr(module, "sinks", None)
    if sinks is not None:  # attention sinks (gpt-oss): an extra logit per head, dropped after softmax
        sink = sinks.reshape(1, -1, 1, 1).expand(scores.shape[0], -1, scores.shape[-2], 1)
        pattern = F.softmax(torch.cat([scores, sink.to(scores.dtype)], dim=-1), dim=-1, dtype=torch.float32)
        pattern = pattern[..., :-1].to(query.dtype)
    else:
        pattern = F.softmax(scores, dim=-1, dtype=torch.float32).to(query.dtype)  # [B, n_heads, T, S]
    if dropout and module.training:
        pattern = F.dropout(pattern, p=dropout, training=True)
    p = pattern.reshape(b, n_kv, n_rep, t, -1)  # [B, n_kv, rep, T, S]
    z = torch.matmul(p, value.unsqueeze(2)).reshape(b, n_heads, t, d)  # [B, n_heads, T, d_head]
    z = z.transpose(1, 2).contiguous()  # [B, T, n_heads, d_head]
    recorder = getattr(module, "_stepscope_recorder", None)
    if recorder is not None:
        if masked is not None:
            scores = scores.masked_fill(masked, float("-inf"))
        recorder.attention(module, query, key, value, scores, pattern, z)
    return z, pattern


def register() -> None:
    """Register the "stepscope" attention and its (eager) mask builder with transformers. Idempotent."""
    global _REGISTERED
    if _REGISTERED:
        return
    from transformers import AttentionInterface
    from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, AttentionMaskInterface

    AttentionInterface.register(IMPLEMENTATION, stepscope_attention)
    AttentionMaskInterface.register(IMPLEMENTATION, ALL_MASK_ATTENTION_FUNCTIONS["eager"])
    _REGISTERED = True
