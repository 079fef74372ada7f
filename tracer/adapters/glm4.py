"""GLM-4: sandwich norms (before and after each sublayer), interleaved partial RoPE, fused gate/up.

    resid_mid  = resid_pre + ln1_post(attn(ln1(resid_pre)))
    resid_post = resid_mid + ln2_post(mlp(ln2(resid_mid)))
    RoPE turns feature pairs (0,1), (2,3), ... of the first rotary_dim features (interleaved)

`hook_attn_out` / `hook_mlp_out` are the sublayer outputs before their post-norm.
"""

from __future__ import annotations

from .base import HookPoint
from .common import fused_mlp_hooks
from .llama import LlamaAdapter


class Glm4Adapter(LlamaAdapter):
    family = "glm4"
    model_types = ("glm4",)
    modules = {**LlamaAdapter.modules, "ln1_post": "post_self_attn_layernorm", "ln2_post": "post_mlp_layernorm"}
    data_flow = (
        "ln1 = RMSNorm(resid_pre); q, k, v = ln1·W_Q + b_Q, ln1·W_K + b_K, ln1·W_V + b_V",
        "rot_q, rot_k = RoPE(q, k): interleaved pairs, first rotary_dim features only",
        "pattern = softmax(rot_q·rot_kᵀ/√d_head + causal mask); z = pattern·v; attn_out = z·W_O",
        "ln1_post = RMSNorm(attn_out); resid_mid = resid_pre + ln1_post",
        "ln2 = RMSNorm(resid_mid); [pre | pre_linear] = ln2·W_gate_up (fused); post = silu(pre) * pre_linear",
        "mlp_out = post·W_down; ln2_post = RMSNorm(mlp_out); resid_post = resid_mid + ln2_post",
    )

    def mlp_hooks(self, mlp) -> list[HookPoint]:
        return fused_mlp_hooks(mlp)

    def facts(self) -> dict:
        facts = super().facts()
        facts.update(post_norms=True, rope_interleaved=True)
        return facts
