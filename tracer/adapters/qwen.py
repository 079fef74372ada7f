"""Qwen2 (the Llama block with q/k/v bias) and Qwen3 (per-head RMSNorm on q and k before RoPE).

    Qwen2: q = ln1·W_Q + b_Q (k, v likewise), then RoPE as in Llama
    Qwen3: q_normed = RMSNorm_head(ln1·W_Q) per head, k likewise; RoPE on the normed q/k
"""

from __future__ import annotations

from .base import HookPoint, Layout, per_head
from .llama import LlamaAdapter


class Qwen2Adapter(LlamaAdapter):
    family = "qwen2"
    model_types = ("qwen2",)
    layout = Layout(qkv_bias=True)
    data_flow = (
        "ln1 = RMSNorm(resid_pre)",
        "q, k, v = ln1·W_Q + b_Q, ln1·W_K + b_K, ln1·W_V + b_V; rot_q, rot_k = RoPE(q, k)",
        "pattern = softmax(rot_q·rot_kᵀ/√d_head + causal mask); z = pattern·v",
        "attn_out = z·W_O; resid_mid = resid_pre + attn_out",
        "ln2 = RMSNorm(resid_mid); post = silu(ln2·W_gate) * (ln2·W_up)",
        "mlp_out = post·W_down; resid_post = resid_mid + mlp_out",
    )


class Qwen3Adapter(LlamaAdapter):
    family = "qwen3"
    model_types = ("qwen3",)
    data_flow: tuple[str, ...] = (
        "ln1 = RMSNorm(resid_pre)",
        "q, k, v = ln1·W_Q, ln1·W_K, ln1·W_V",
        "q_normed, k_normed = RMSNorm per head (q_norm, k_norm); rot_q, rot_k = RoPE(q_normed, k_normed)",
        "pattern = softmax(rot_q·rot_kᵀ/√d_head + causal mask); z = pattern·v",
        "attn_out = z·W_O; resid_mid = resid_pre + attn_out",
        "ln2 = RMSNorm(resid_mid); post = silu(ln2·W_gate) * (ln2·W_up)",
        "mlp_out = post·W_down; resid_post = resid_mid + mlp_out",
    )

    def attention_hooks(self, attn) -> list[HookPoint]:
        return [
            *super().attention_hooks(attn),
            HookPoint(attn.q_norm, "out", "attn.hook_q_normed", per_head, heads_of=attn.q_proj),  # [B, T, n_heads, d_head] in
            HookPoint(attn.k_norm, "out", "attn.hook_k_normed", per_head, heads_of=attn.k_proj),
        ]
