"""gpt-oss: the Llama block with attention sinks, alternating sliding-window/full layers and a MoE MLP.

    scores  = rot_q·rot_kᵀ/√d_head, masked (window on sliding layers), plus one sink logit per head
    pattern = softmax over the S keys and the sink (the sink's mass is dropped: z = pattern[:S]·v)
    router_probs = softmax(ln2·W_router + b); expert_ids = top-k; mlp_out = Σ_k w_k·expert_k(ln2)
    expert(x) = ((clamp(up) + 1) · g·σ(1.702·g))·W_down + b,  g = clamp(gate), gate/up interleaved

The recorded scores and pattern have one more column than keys, the last: the sink (the manifest's
`attention_sink` says so).
"""

from __future__ import annotations

from .base import HookPoint
from .common import ATTENTION_SINK, router_hooks
from .llama import LlamaAdapter


class GptOssAdapter(LlamaAdapter):
    family = "gpt_oss"
    model_types = ("gpt_oss",)
    min_transformers = "5.20"  # measured: older releases lay out its modules differently
    data_flow = (
        "ln1 = RMSNorm(resid_pre); q, k, v = ln1·W_Q + b_Q, ln1·W_K + b_K, ln1·W_V + b_V; rot_q, rot_k = RoPE(q, k)",
        "scores = rot_q·rot_kᵀ/√d_head + causal mask (sliding window on local layers), then the sink logit as a last column",
        "pattern = softmax(scores) over keys and sink; z = pattern[keys]·v; attn_out = z·W_O + b_O",
        "resid_mid = resid_pre + attn_out; ln2 = RMSNorm(resid_mid)",
        "router_probs = softmax(ln2·W_router + b); expert_ids = top_k; w = renormalised top-k probs",
        "mlp_out = Σ_k w_k·expert_k(ln2), expert = ((clamp(up) + 1)·g·σ(1.702 g))·W_down + b; resid_post = resid_mid + mlp_out",
    )

    def mlp_hooks(self, mlp) -> list[HookPoint]:
        return router_hooks(mlp.router)

    def facts(self) -> dict:
        facts = super().facts()
        c = self.config
        facts.update(
            n_experts=c.num_local_experts,
            experts_per_token=c.num_experts_per_tok,
            attention_sink=ATTENTION_SINK,
            swiglu_alpha=getattr(c, "swiglu_alpha", None),
            swiglu_limit=getattr(c, "swiglu_limit", None),
        )
        return facts
