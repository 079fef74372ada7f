"""Phi-3: the Llama block with fused projections, split here into the usual names.

    qkv_proj(ln1) = [q | k | v]            -> attn.hook_q, attn.hook_k (v from the attention function)
    gate_up_proj(ln2) = [gate | up]         -> mlp.hook_pre, mlp.hook_pre_linear
"""

from __future__ import annotations

import torch

from .base import HookPoint
from .llama import LlamaAdapter


def _slice_heads(start: int, n: int, d_head: int):
    """[B, T, fused] -> [T, n, d_head]: heads start..start+n of a fused projection output."""

    def split(t: torch.Tensor) -> torch.Tensor:
        return t[0, :, start * d_head : (start + n) * d_head].reshape(t.shape[1], n, d_head)

    return split


def _half(which: int):
    """[B, T, 2 * d_mlp] -> [T, d_mlp]: the gate (0) or up (1) half of gate_up_proj."""

    def split(t: torch.Tensor) -> torch.Tensor:
        return t[0].chunk(2, dim=-1)[which]

    return split


class Phi3Adapter(LlamaAdapter):
    family = "phi3"
    model_types = ("phi3",)
    data_flow = (
        "ln1 = RMSNorm(resid_pre)",
        "[q | k | v] = ln1·W_QKV (fused qkv_proj); rot_q, rot_k = RoPE(q, k) (partial when partial_rotary_factor < 1)",
        "pattern = softmax(rot_q·rot_kᵀ/√d_head + causal mask); z = pattern·v",
        "attn_out = z·W_O; resid_mid = resid_pre + attn_out",
        "ln2 = RMSNorm(resid_mid); [pre | pre_linear] = ln2·W_gate_up (fused); post = silu(pre) * pre_linear",
        "mlp_out = post·W_down; resid_post = resid_mid + mlp_out",
    )

    def d_head(self) -> int:
        c = self.config
        return getattr(c, "head_dim", None) or c.hidden_size // c.num_attention_heads

    def attention_hooks(self, attn) -> list[HookPoint]:
        n_heads, d = self.config.num_attention_heads, self.d_head()
        return [
            HookPoint(attn.qkv_proj, "out", "attn.hook_q", _slice_heads(0, n_heads, d)),
            HookPoint(attn.qkv_proj, "out", "attn.hook_k", _slice_heads(n_heads, self.n_kv_heads(), d)),
        ]

    def mlp_hooks(self, mlp) -> list[HookPoint]:
        return [
            HookPoint(mlp.gate_up_proj, "out", "mlp.hook_pre", _half(0)),
            HookPoint(mlp.gate_up_proj, "out", "mlp.hook_pre_linear", _half(1)),
            HookPoint(mlp.down_proj, "in", "mlp.hook_post"),
            HookPoint(mlp, "out", "hook_mlp_out"),
        ]
