"""Gemma 2 and Gemma 3 (text): norms before *and* after attention and MLP, scaled embeddings,
alternating local (sliding-window) and global attention, logit soft-capping.

    hook_embed = embed_tokens(ids) * √d_model            (scaled: what enters block 0)
    resid_mid  = resid_pre + ln1_post(attn(ln1(resid_pre)))
    resid_post = resid_mid + ln2_post(mlp(ln2(resid_mid)))
    logits     = cap · tanh(lm_head(ln_final) / cap)      (final_logit_softcapping)

`hook_attn_out` / `hook_mlp_out` are the sublayer outputs *before* their post-norm; what is added
to the residual stream is `ln1_post.hook_out` / `ln2_post.hook_out` (the post-norms' outputs).
"""

from __future__ import annotations

import torch

from .base import HookPoint, rows
from .llama import LlamaAdapter


def _heads_first(t: torch.Tensor) -> torch.Tensor:
    """[B, n, T, d_head] -> [T, n, d_head] (Gemma 3 normalises q/k after the head transpose)."""
    return t[0].transpose(0, 1)


def softcap(logits: torch.Tensor, cap: float | None) -> torch.Tensor:
    """cap · tanh(logits / cap), the same operations in the same order as the model."""
    if cap is None:
        return logits
    return torch.tanh(logits / cap) * cap


class GemmaAdapter(LlamaAdapter):
    family = "gemma"
    model_types = ("gemma2", "gemma3_text")
    norm = "rmsnorm"
    norm_weight_offset = 1.0
    modules = {
        **LlamaAdapter.modules,
        "ln1_post": "post_attention_layernorm",
        "ln2": "pre_feedforward_layernorm",
        "ln2_post": "post_feedforward_layernorm",
    }

    @property
    def data_flow(self) -> tuple[str, ...]:
        c = self.config
        qk = "; q_normed, k_normed = RMSNorm per head" if hasattr(self.layers()[0].self_attn, "q_norm") else ""
        raw = "rot_q·rot_kᵀ·query_pre_attn_scalar^-1/2"
        cap = c.attn_logit_softcapping
        scores = f"{cap}·tanh({raw} / {cap})" if cap else raw
        final_cap = (
            f"logits = {c.final_logit_softcapping}·tanh(ln_final·W_U / {c.final_logit_softcapping})"
            if c.final_logit_softcapping
            else "logits = ln_final·W_U"
        )
        return (
            "embed = W_E[ids]·√d_model (scaled embedding enters block 0)",
            "ln1 = RMSNorm(resid_pre) (weight 1 + w)",
            f"q, k, v = ln1·W_Q, ln1·W_K, ln1·W_V{qk}; rot_q, rot_k = RoPE",
            f"scores = {scores}; causal mask, plus the sliding window ({c.sliding_window}) on local layers",
            "z = softmax(scores)·v; attn_out = z·W_O; ln1_post = RMSNorm(attn_out)",
            "resid_mid = resid_pre + ln1_post",
            "ln2 = RMSNorm(resid_mid); post = gelu_tanh(ln2·W_gate) * (ln2·W_up); mlp_out = post·W_down",
            "ln2_post = RMSNorm(mlp_out); resid_post = resid_mid + ln2_post",
            final_cap,
        )

    def attention_hooks(self, attn) -> list[HookPoint]:
        points = super().attention_hooks(attn)
        if hasattr(attn, "q_norm"):  # Gemma 3
            points += [
                HookPoint(attn.q_norm, "out", "attn.hook_q_normed", _heads_first, heads_of=attn.q_proj),
                HookPoint(attn.k_norm, "out", "attn.hook_k_normed", _heads_first, heads_of=attn.k_proj),
            ]
        return points

    def head_hooks(self) -> list[HookPoint]:
        """The recorded logits are the model's output, after soft-capping (not the lm_head output)."""
        points = [p for p in super().head_hooks() if p.name != "logits"]
        return points + [HookPoint(self.model, "out", "logits", rows, pick="logits")]

    def final_softcap(self) -> float | None:
        return self.config.final_logit_softcapping

    def unembed(self, x: torch.Tensor) -> torch.Tensor:
        """[n, d_model] -> [n, vocab]: final norm, LM head, then the final soft-cap."""
        return softcap(self.lm_head()(self.final_norm()(x)), self.config.final_logit_softcapping)

    def facts(self) -> dict:
        facts = super().facts()
        c = self.config
        facts.update(
            family="gemma3" if c.model_type == "gemma3_text" else "gemma2",
            act=getattr(c, "hidden_activation", None) or facts["act"],
            norm_weight="1 + w",
            embed_scale=float(c.hidden_size**0.5),
            hook_embed="embed_tokens(ids) * sqrt(d_model): the scaled embedding that enters block 0",
            final_logit_softcapping=c.final_logit_softcapping,
            attn_logit_softcapping=c.attn_logit_softcapping,
            query_pre_attn_scalar=c.query_pre_attn_scalar,
            post_norms=True,
        )
        return facts
