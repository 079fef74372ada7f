"""Mixtral: the Llama block with a sparse mixture-of-experts MLP.

    router_probs = softmax(ln2·W_router)                        [T, n_experts]
    expert_ids   = top-k of router_probs                        [T, top_k]
    mlp_out      = Σ_k  w_k · expert_{id_k}(ln2),  w = renormalised top-k probabilities
    expert_e(x)  = (silu(x·W_gate_e) * (x·W_up_e))·W_down_e

Per-expert activations (hook_pre / hook_post) have no single [T, d_mlp] value: not applicable.
"""

from __future__ import annotations

from .base import HookPoint
from .common import router_hooks
from .llama import LlamaAdapter


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
        return router_hooks(mlp.gate)

    def facts(self) -> dict:
        facts = super().facts()
        c = self.config
        facts.update(n_experts=c.num_local_experts, experts_per_token=c.num_experts_per_tok,
                     norm_topk_prob=True)  # the top-k weights are always renormalised
        return facts
