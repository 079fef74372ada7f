"""Transforms and hook lists that several families share (fused projections, MoE routers)."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from .base import HookPoint, Transform

ATTENTION_SINK = (
    "the last key column of attn.hook_attn_scores / attn.hook_pattern is the attention sink "
    "(its logit, and the probability mass it absorbs; z uses the other columns)"
)


def slice_heads(start: int, n: int, d_head: int) -> Transform:
    """[B, T, fused] -> [T, n, d_head]: heads start..start+n of a fused projection output."""

    def split(t: torch.Tensor) -> torch.Tensor:
        return t[0, :, start * d_head : (start + n) * d_head].reshape(t.shape[1], n, d_head)

    return split


def half(which: int) -> Transform:
    """[B, T, 2 * d_mlp] -> [T, d_mlp]: the gate (0) or up (1) half of a fused gate_up_proj."""

    def split(t: torch.Tensor) -> torch.Tensor:
        return t[0].chunk(2, dim=-1)[which]

    return split


def fused_mlp_hooks(mlp: Any) -> list[HookPoint]:  # mlp: a family's MLP module (submodules by attribute)
    """A gated MLP whose gate and up projections are one `gate_up_proj`."""
    return [
        HookPoint(mlp.gate_up_proj, "out", "mlp.hook_pre", half(0)),
        HookPoint(mlp.gate_up_proj, "out", "mlp.hook_pre_linear", half(1)),
        HookPoint(mlp.down_proj, "in", "mlp.hook_post"),
    ]


def router_probs(router_logits: torch.Tensor) -> torch.Tensor:
    """[T, n_experts] router logits -> probabilities, as the router computes them (float32 softmax)."""
    return torch.softmax(router_logits.float(), dim=-1)


def as_is(t: torch.Tensor) -> torch.Tensor:
    """[T, top_k] expert ids (the router flattens the batch already)."""
    return t


def router_hooks(router: nn.Module, probs: Transform = router_probs, ids: Transform = as_is) -> list[HookPoint]:
    """The router's outputs (logits, top-k weights, top-k ids): its probabilities and the chosen experts."""
    return [
        HookPoint(router, "out", "mlp.hook_router_probs", probs, pick=0),
        HookPoint(router, "out", "mlp.hook_expert_ids", ids, pick=2),
    ]
