"""GLM-4: sandwich norms (before and after each sublayer), interleaved partial RoPE, fused gate/up.

    resid_mid  = resid_pre + ln1_post(attn(ln1(resid_pre)))
    resid_post = resid_mid + ln2_post(mlp(ln2(resid_mid)))
    RoPE turns feature pairs (0,1), (2,3), ... of the first rotary_dim features (interleaved)

`hook_attn_out` / `hook_mlp_out` are the sublayer outputs before their post-norm.
"""

from __future__ import annotations

from .base import HookPoint
from .llama import LlamaAdapter
from .phi3 import _half


class Glm4Adapter(LlamaAdapter):
    family = "glm4"
    model_types = ("glm4",)
    data_flow = (
        "ln1 = RMSNorm(resid_pre); q, k, v = ln1·W_Q + b_Q, ln1·W_K + b_K, ln1·W_V + b_V",
        "rot_q, rot_k = RoPE(q, k): interleaved pairs, first rotary_dim features only",
        "pattern = softmax(rot_q·rot_kᵀ/√d_head + causal mask); z = pattern·v; attn_out = z·W_O",
        "ln1_post = RMSNorm(attn_out); resid_mid = resid_pre + ln1_post",
        "ln2 = RMSNorm(resid_mid); [pre | pre_linear] = ln2·W_gate_up (fused); post = silu(pre) * pre_linear",
        "mlp_out = post·W_down; ln2_post = RMSNorm(mlp_out); resid_post = resid_mid + ln2_post",
    )

    def mlp_hooks(self, mlp) -> list[HookPoint]:
        return [
            HookPoint(mlp.gate_up_proj, "out", "mlp.hook_pre", _half(0)),
            HookPoint(mlp.gate_up_proj, "out", "mlp.hook_pre_linear", _half(1)),
            HookPoint(mlp.down_proj, "in", "mlp.hook_post"),
            HookPoint(mlp, "out", "hook_mlp_out"),
        ]

    def block_hooks(self, layer) -> list[HookPoint]:
        return [
            HookPoint(layer, "in", "hook_resid_pre"),
            HookPoint(layer.input_layernorm, "out", "ln1.hook_normalized"),
            *self.attention_hooks(layer.self_attn),
            HookPoint(layer.self_attn, "out", "hook_attn_out"),
            HookPoint(layer.post_self_attn_layernorm, "out", "ln1_post.hook_normalized"),
            HookPoint(layer.post_attention_layernorm, "in", "hook_resid_mid"),
            HookPoint(layer.post_attention_layernorm, "out", "ln2.hook_normalized"),
            *self.mlp_hooks(layer.mlp),
            HookPoint(layer.post_mlp_layernorm, "out", "ln2_post.hook_normalized"),
            HookPoint(layer, "out", "hook_resid_post"),
        ]

    def facts(self) -> dict:
        facts = super().facts()
        facts.update(post_norms=True, rope_interleaved=True)
        return facts
