"""Llama layout: SmolLM2, Llama 2/3 (RMSNorm, RoPE, SwiGLU, GQA): the base adapter's standard block.

    resid_pre ─ input_layernorm ─ q/k/v_proj ─ RoPE ─ attention ─ o_proj ─(+)─ resid_mid
    resid_mid ─ post_attention_layernorm ─ silu(gate_proj) * up_proj ─ down_proj ─(+)─ resid_post
"""

from __future__ import annotations

from .base import Adapter


class LlamaAdapter(Adapter):
    family = "llama"
    model_types: tuple[str, ...] = ("llama",)
