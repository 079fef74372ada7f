"""Qwen3-Next: a hybrid of linear-attention (Gated DeltaNet) and gated full-attention blocks, MoE MLPs.

Full-attention blocks (every 4th by default):
    [q | gate] = ln1·W_Q per head; q_normed, k_normed = RMSNorm per head (weight 1 + w)
    rot_q, rot_k = RoPE on the first rotary_dim features; z = softmax(rot_q·rot_kᵀ/√d_head + mask)·v
    attn_out = (z ⊙ σ(gate))·W_O                              (attn.hook_gate: the output gate's logits)
Linear-attention blocks (no attention map: a recurrent state instead):
    core_out = gated delta rule over (conv1d(ln1·W_qkv), β, decay), state S [n_v_heads, d_k, d_v]
    attn_out = (RMSNorm(core_out) ⊙ silu(gate))·W_out          (linear_attn.hook_core_out, linear_attn.hook_gate)
    linear_attn.hook_state: S after the step (recorded when the model runs with a cache, i.e. while generating)
Every block: resid_mid = resid_pre + attn_out; MoE: mlp_out = Σ_k w_k·expert_k(ln2) + σ(ln2·w_s)·shared(ln2).
"""

from __future__ import annotations

import torch

from .base import HookPoint, heads, per_head
from .common import router_hooks
from .qwen import Qwen3Adapter


def _q_half(n_heads: int, which: int):
    """[B, T, n_heads * 2 d_head] -> [T, n_heads, d_head]: the query (0) or the output gate (1) of each head."""

    def split(t: torch.Tensor) -> torch.Tensor:
        return t[0].reshape(t.shape[1], n_heads, 2, -1)[:, :, which]

    return split


def _flat_heads(n_heads: int):
    """[B·T·n_heads, d] (the gated norm's flattened input) -> [T, n_heads, d] (batch of one)."""
    return lambda t: t.reshape(-1, n_heads, t.shape[-1])


def _state(layer_idx: int):
    """The cache -> this layer's recurrent state [n_v_heads, d_k, d_v], copied (the cache updates it in place)."""

    def get(cache) -> torch.Tensor | None:
        state = cache.get_recurrent_state(layer_idx, state_idx=0) if cache is not None else None
        return None if state is None else state[0].clone()

    return get


class Qwen3NextAdapter(Qwen3Adapter):
    family = "qwen3_next"
    model_types = ("qwen3_next",)
    min_transformers = "5.24"  # measured: older releases lay out its modules differently
    norm_weight_offset = 1.0
    data_flow = (
        "ln1 = RMSNorm(resid_pre) (weight 1 + w)",
        "full attention: [q | gate] = ln1·W_Q; q_normed, k_normed per head; rot_q, rot_k = RoPE (partial)",
        "full attention: z = softmax(rot_q·rot_kᵀ/√d_head + causal mask)·v; attn_out = (z ⊙ σ(gate))·W_O",
        "linear attention: core_out = gated delta rule(conv(ln1·W_qkv), β, decay; state); attn_out = (RMSNorm(core_out) ⊙ silu(gate))·W_out",
        "resid_mid = resid_pre + attn_out; ln2 = RMSNorm(resid_mid); router_probs = softmax(ln2·W_router)",
        "mlp_out = Σ_k w_k·expert_k(ln2) + σ(ln2·w_shared)·shared_expert(ln2); resid_post = resid_mid + mlp_out",
    )

    def attention(self, layer):
        return getattr(layer, "self_attn", None)  # linear-attention blocks have no attention map

    def slot_module(self, layer, role: str):
        """The attention role is the block's token mixer: full attention, else linear attention."""
        if role == "attn" and self.attention(layer) is None:
            return layer.linear_attn
        return super().slot_module(layer, role)

    def attention_hooks(self, attn) -> list[HookPoint]:
        if not hasattr(attn, "q_proj"):  # a linear-attention mixer
            return self.linear_attention_hooks(attn, attn.layer_idx)
        c = self.config
        return [
            HookPoint(attn.q_proj, "out", "attn.hook_q", _q_half(c.num_attention_heads, 0)),
            HookPoint(attn.q_proj, "out", "attn.hook_gate", _q_half(c.num_attention_heads, 1)),
            HookPoint(attn.k_proj, "out", "attn.hook_k", heads(self.n_kv_heads())),
            HookPoint(attn.q_norm, "out", "attn.hook_q_normed", per_head, heads_of=attn.q_proj),  # [B, T, n_heads, d_head]
            HookPoint(attn.k_norm, "out", "attn.hook_k_normed", per_head, heads_of=attn.k_proj),
        ]

    def linear_attention_hooks(self, lin, layer_idx: int) -> list[HookPoint]:
        n_v = self.config.linear_num_value_heads
        return [
            HookPoint(lin.norm, "in", "linear_attn.hook_core_out", _flat_heads(n_v), pick=0),
            HookPoint(lin.norm, "in", "linear_attn.hook_gate", _flat_heads(n_v), pick=1),
            HookPoint(lin, "in", "linear_attn.hook_state", _state(layer_idx), pick="cache"),
        ]

    def mlp_hooks(self, mlp) -> list[HookPoint]:
        return router_hooks(mlp.gate) if hasattr(mlp, "experts") else super().mlp_hooks(mlp)

    def layer_types(self) -> list[str] | None:
        return list(self.config.layer_types)

    def facts(self) -> dict:
        facts = super().facts()
        c = self.config
        linear = [i for i, kind in enumerate(c.layer_types) if kind == "linear_attention"]
        facts.update(
            norm_weight="1 + w",
            n_experts=c.num_experts,
            experts_per_token=c.num_experts_per_tok,
            norm_topk_prob=bool(c.norm_topk_prob),
            d_mlp_expert=c.moe_intermediate_size,
            layers_without_attention=linear,
            no_attention_reason=(
                "linear-attention (Gated DeltaNet) blocks keep a recurrent state instead of attending to each key: "
                "no attention map; they record linear_attn.hook_core_out, hook_gate and hook_state"
            ) if linear else None,
            linear_attention=dict(
                n_key_heads=c.linear_num_key_heads, n_value_heads=c.linear_num_value_heads,
                d_key=c.linear_key_head_dim, d_value=c.linear_value_head_dim, conv_kernel=c.linear_conv_kernel_dim,
            ),
        )
        return facts
