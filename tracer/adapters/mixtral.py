"""Mixtral: the Llama block with a sparse mixture-of-experts MLP.

    router_probs = softmax(ln2·W_router)                        [T, n_experts]
    expert_ids   = top-k of router_probs                        [T, top_k]
    mlp_out      = Σ_k  w_k · expert_{id_k}(ln2),  w = renormalised top-k probabilities
    expert_e(x)  = (silu(x·W_gate_e) * (x·W_up_e))·W_down_e

Per-expert activations (hook_pre / hook_post) have no single [T, d_mlp] value: not applicable.
"""

from __future__ import annotations

import torch

from .base import HookPoint
from .llama import LlamaAdapter


def _router_probs(router_logits: torch.Tensor) -> torch.Tensor:
    """[T, n_experts] router logits -> probabilities, as the router computes them (float32 softmax)."""
    return torch.softmax(router_logits.float(), dim=-1)


def _as_is(t: torch.Tensor) -> torch.Tensor:
    """[T, top_k] expert ids (the router flattens the batch already)."""
    return t


def moe_hooks(moe) -> list[HookPoint]:
    """Router (its outputs: logits, top-k weights, top-k ids) and the block's output."""
    return [
        HookPoint(moe.gate, "out", "mlp.hook_router_probs", _router_probs, pick=0),
        HookPoint(moe.gate, "out", "mlp.hook_expert_ids", _as_is, pick=2),
        HookPoint(moe, "out", "hook_mlp_out"),
    ]


class MixtralAdapter(LlamaAdapter):
    family = "mixtral"
    model_types = ("mixtral",)
    data_flow = (
        "ln1 = RMSNorm(resid_pre); q, k, v = ln1·W_Q, ln1·W_K, ln1·W_V; rot_q, rot_k = RoPE(q, k)",
        "pattern = softmax(rot_q·rot_kᵀ/√d_head + causal mask); z = pattern·v",
        "attn_out = z·W_O; resid_mid = resid_pre + attn_out; ln2 = RMSNorm(resid_mid)",
        "router_probs = softmax(ln2·W_router); expert_ids = top_k(router_probs)",
        "mlp_out = Σ_k w_k·expert_k(ln2), w = top-k probs renormalised; expert = (silu(x·W_gate)*(x·W_up))·W_down",
        "resid_post = resid_mid + mlp_out",
    )

    def mlp_hooks(self, mlp) -> list[HookPoint]:
        return moe_hooks(mlp)

    def facts(self) -> dict:
        facts = super().facts()
        c = self.config
        facts.update(n_experts=c.num_local_experts, experts_per_token=c.num_experts_per_tok)
        return facts
