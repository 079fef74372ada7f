"""OLMo 2: no norm before attention or MLP; RMSNorm *after* each sublayer, and on the whole q and k.

    q_normed = RMSNorm(resid_pre·W_Q) over all heads at once (k likewise); rot_q, rot_k = RoPE
    resid_mid  = resid_pre + ln1_post(attn(resid_pre))
    resid_post = resid_mid + ln2_post(mlp(resid_mid))

There is no ln1/ln2 (the sublayers read the residual stream itself). `hook_attn_out` and
`hook_mlp_out` are the sublayer outputs before their post-norm; what is added to the residual
stream is `ln1_post.hook_out` / `ln2_post.hook_out`.
"""

from __future__ import annotations

from .base import HookPoint, heads
from .llama import LlamaAdapter
from .slots import BLOCK_SLOTS, RESID_MID, replacing


class Olmo2Adapter(LlamaAdapter):
    family = "olmo2"
    model_types = ("olmo2",)
    modules = {"attn": "self_attn", "ln1_post": "post_attention_layernorm", "mlp": "mlp", "ln2_post": "post_feedforward_layernorm"}
    slots = replacing(BLOCK_SLOTS, RESID_MID.at("mlp"))  # no ln1/ln2: resid_mid is the MLP's input
    data_flow = (
        "q, k, v = resid_pre·W_Q, resid_pre·W_K, resid_pre·W_V (no norm before attention)",
        "q_normed, k_normed = RMSNorm over all heads of q, k; rot_q, rot_k = RoPE(q_normed, k_normed)",
        "pattern = softmax(rot_q·rot_kᵀ/√d_head + causal mask); z = pattern·v; attn_out = z·W_O",
        "ln1_post = RMSNorm(attn_out); resid_mid = resid_pre + ln1_post",
        "post = silu(resid_mid·W_gate) * (resid_mid·W_up); mlp_out = post·W_down",
        "ln2_post = RMSNorm(mlp_out); resid_post = resid_mid + ln2_post",
    )

    def attention_hooks(self, attn) -> list[HookPoint]:
        n_heads, n_kv = self.config.num_attention_heads, self.n_kv_heads()
        return [
            *super().attention_hooks(attn),
            HookPoint(attn.q_norm, "out", "attn.hook_q_normed", heads(n_heads)),  # [B, T, n_heads * d_head] out
            HookPoint(attn.k_norm, "out", "attn.hook_k_normed", heads(n_kv)),
        ]

    def facts(self) -> dict:
        facts = super().facts()
        facts.update(post_norms=True, pre_norms=False, qk_norm="over all heads (q_norm/k_norm on the whole projection)")
        return facts
