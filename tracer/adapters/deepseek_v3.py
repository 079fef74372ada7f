"""DeepSeek-V3 (and R1, Kimi-K2): multi-head latent attention (MLA) and shared + routed experts.

    q_latent  = RMSNorm(ln1·W_DQ)                      [T, q_lora_rank]   (attn.hook_q_latent)
    q         = q_latent·W_UQ = [q_nope | q_pe]         [T, H, d_nope + d_rope]
    kv_latent = RMSNorm((ln1·W_DKV)[:kv_lora_rank])     [T, kv_lora_rank]  (attn.hook_kv_latent: what the cache keeps)
    k_pe      = (ln1·W_DKV)[kv_lora_rank:]              one RoPE key shared by all heads
    [k_nope | v] = kv_latent·W_UKV per head;  rot_q = [q_nope | RoPE(q_pe)], rot_k = [k_nope | RoPE(k_pe)]
    z = softmax(rot_q·rot_kᵀ·scale)·v  (v has its own head size d_v)
    MoE layers: router_probs = σ(ln2·W_router) (sigmoid affinities, not a distribution);
    experts chosen on σ + bias (group-limited), weights renormalised × routed_scaling_factor;
    mlp_out = Σ_k w_k·expert_k(ln2) + shared(ln2)       (mlp.hook_shared_out: the shared experts)

The first `first_k_dense_replace` layers have a dense SwiGLU MLP. `attn.hook_k` (the un-rotated
per-head key) is never formed by the model: not applicable. RoPE is de-interleaved (rope_interleave):
the rotated half comes out as [even features | odd features], as the model computes it.
"""

from __future__ import annotations

import torch

from .base import HookPoint, heads, rows
from .common import router_hooks
from .llama import LlamaAdapter


def _sigmoid_probs(router_logits: torch.Tensor) -> torch.Tensor:
    """[T, n_experts] router logits -> sigmoid affinities, as the router scores them (float32)."""
    return router_logits.float().sigmoid()


def _sorted_ids(ids: torch.Tensor) -> torch.Tensor:
    """[T, top_k] chosen experts in ascending order (the router's top-k is unsorted)."""
    return ids.sort(dim=-1).values


class DeepseekV3Adapter(LlamaAdapter):
    family = "deepseek_v3"
    model_types = ("deepseek_v3",)
    min_transformers = "5.20"  # measured: older releases lay out its modules differently
    data_flow = (
        "ln1 = RMSNorm(resid_pre); q_latent = RMSNorm(ln1·W_DQ); q = q_latent·W_UQ = [q_nope | q_pe]",
        "kv_latent = RMSNorm(ln1·W_DKV[:r]) (cached); k_pe = ln1·W_DKV[r:] (one head); [k_nope | v] = kv_latent·W_UKV",
        "rot_q = [q_nope | RoPE(q_pe)], rot_k = [k_nope | RoPE(k_pe)]; pattern = softmax(rot_q·rot_kᵀ·scale + causal mask)",
        "z = pattern·v (d_v per head); attn_out = z·W_O; resid_mid = resid_pre + attn_out; ln2 = RMSNorm(resid_mid)",
        "router_probs = σ(ln2·W_router); expert_ids = top_k(σ + bias, group-limited); w = renormalised × routed_scaling_factor",
        "mlp_out = Σ_k w_k·expert_k(ln2) + shared(ln2) (dense SwiGLU in the first layers); resid_post = resid_mid + mlp_out",
    )

    def attention_hooks(self, attn) -> list[HookPoint]:
        c = self.config
        points = [
            HookPoint(attn.kv_a_layernorm, "out", "attn.hook_kv_latent", rows),
            HookPoint(attn.q_b_proj if attn.q_b_proj is not None else attn.q_proj, "out", "attn.hook_q", heads(c.num_attention_heads)),
        ]
        if attn.q_b_proj is not None:
            points.append(HookPoint(attn.q_b_proj, "in", "attn.hook_q_latent", rows))
        return points

    def mlp_hooks(self, mlp) -> list[HookPoint]:
        if not hasattr(mlp, "experts"):
            return super().mlp_hooks(mlp)
        return [
            *router_hooks(mlp.gate, probs=_sigmoid_probs, ids=_sorted_ids),
            HookPoint(mlp.shared_experts, "out", "mlp.hook_shared_out"),
        ]

    def rotary_dim(self) -> int | None:
        return self.config.qk_rope_head_dim

    def facts(self) -> dict:
        facts = super().facts()
        c = self.config
        d_qk = c.qk_nope_head_dim + c.qk_rope_head_dim
        facts.update(
            d_head=d_qk,
            d_head_v=c.v_head_dim,
            n_kv_heads=c.num_attention_heads,
            q_lora_rank=c.q_lora_rank,
            kv_lora_rank=c.kv_lora_rank,
            qk_nope_head_dim=c.qk_nope_head_dim,
            qk_rope_head_dim=c.qk_rope_head_dim,
            rope_interleave=bool(c.rope_interleave),
            n_experts=c.n_routed_experts,
            experts_per_token=c.num_experts_per_tok,
            n_shared_experts=c.n_shared_experts,
            first_k_dense_replace=c.first_k_dense_replace,
            routed_scaling_factor=c.routed_scaling_factor,
            router_scoring="sigmoid",
            d_mlp_expert=c.moe_intermediate_size,
            mla="attn.hook_kv_latent is what the KV cache keeps per position (kv_lora_rank + a shared RoPE key)",
        )
        return facts
