"""Qwen3-MoE: Qwen3 attention (per-head q/k norms) with a sparse mixture-of-experts MLP.

    router_probs = softmax(ln2·W_router); expert_ids = top-k of router_probs
    mlp_out = Σ_k w_k · expert_{id_k}(ln2), w = top-k probabilities (renormalised if norm_topk_prob)

Layers listed in `mlp_only_layers` (or off the `decoder_sparse_step`) keep a dense SwiGLU MLP
and record the dense names there.
"""

from __future__ import annotations

from .base import HookPoint
from .common import router_hooks
from .qwen import Qwen3Adapter


class Qwen3MoeAdapter(Qwen3Adapter):
    family = "qwen3_moe"
    model_types = ("qwen3_moe",)
    data_flow = (
        "ln1 = RMSNorm(resid_pre); q, k, v = ln1·W_Q, ln1·W_K, ln1·W_V",
        "q_normed, k_normed = RMSNorm per head; rot_q, rot_k = RoPE(q_normed, k_normed)",
        "pattern = softmax(rot_q·rot_kᵀ/√d_head + causal mask); z = pattern·v",
        "attn_out = z·W_O; resid_mid = resid_pre + attn_out; ln2 = RMSNorm(resid_mid)",
        "router_probs = softmax(ln2·W_router); expert_ids = top_k(router_probs)",
        "mlp_out = Σ_k w_k·expert_k(ln2) (w renormalised when norm_topk_prob); expert = (silu(x·W_gate)*(x·W_up))·W_down",
        "resid_post = resid_mid + mlp_out",
    )

    def mlp_hooks(self, mlp) -> list[HookPoint]:
        return router_hooks(mlp.gate) if hasattr(mlp, "gate") and hasattr(mlp, "experts") else super().mlp_hooks(mlp)

    def facts(self) -> dict:
        facts = super().facts()
        c = self.config
        facts.update(
            n_experts=c.num_experts,
            experts_per_token=c.num_experts_per_tok,
            norm_topk_prob=bool(c.norm_topk_prob),
            d_mlp_expert=c.moe_intermediate_size,
            mlp_only_layers=list(getattr(c, "mlp_only_layers", []) or []),
        )
        return facts
