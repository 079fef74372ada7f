"""Phi-3: the Llama block with fused projections, split here into the usual names.

    qkv_proj(ln1) = [q | k | v]            -> attn.hook_q, attn.hook_k (v from the attention function)
    gate_up_proj(ln2) = [gate | up]         -> mlp.hook_pre, mlp.hook_pre_linear
"""

from __future__ import annotations

from .base import HookPoint, Layout
from .common import fused_mlp_hooks, slice_heads
from .llama import LlamaAdapter


class Phi3Adapter(LlamaAdapter):
    family = "phi3"
    model_types = ("phi3",)
    layout = Layout(qkv="fused", mlp_fused=True)
    data_flow = (
        "ln1 = RMSNorm(resid_pre)",
        "[q | k | v] = ln1·W_QKV (fused qkv_proj); rot_q, rot_k = RoPE(q, k) (partial when partial_rotary_factor < 1)",
        "pattern = softmax(rot_q·rot_kᵀ/√d_head + causal mask); z = pattern·v",
        "attn_out = z·W_O; resid_mid = resid_pre + attn_out",
        "ln2 = RMSNorm(resid_mid); [pre | pre_linear] = ln2·W_gate_up (fused); post = silu(pre) * pre_linear",
        "mlp_out = post·W_down; resid_post = resid_mid + mlp_out",
    )

    def attention_hooks(self, attn) -> list[HookPoint]:
        n_heads, d = self.config.num_attention_heads, self.d_head()
        return [
            HookPoint(attn.qkv_proj, "out", "attn.hook_q", slice_heads(0, n_heads, d)),
            HookPoint(attn.qkv_proj, "out", "attn.hook_k", slice_heads(n_heads, self.n_kv_heads(), d)),
        ]

    def mlp_hooks(self, mlp) -> list[HookPoint]:
        return fused_mlp_hooks(mlp)
