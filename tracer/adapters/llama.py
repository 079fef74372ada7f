"""Llama layout: SmolLM2, Llama 2/3 (RMSNorm, RoPE, SwiGLU, GQA). Mistral and Qwen subclass it.

    resid_pre ─ input_layernorm ─ q/k/v_proj ─ RoPE ─ attention ─ o_proj ─(+)─ resid_mid
    resid_mid ─ post_attention_layernorm ─ silu(gate_proj) * up_proj ─ down_proj ─(+)─ resid_post
"""

from __future__ import annotations

from .base import Adapter, HookPoint, heads


class LlamaAdapter(Adapter):
    family = "llama"
    model_types = ("llama",)

    def n_kv_heads(self) -> int:
        return getattr(self.config, "num_key_value_heads", None) or self.config.num_attention_heads

    def attention_hooks(self, attn) -> list[HookPoint]:
        """q and k before RoPE (v, rotated q/k, scores, pattern and z come from the attention function)."""
        return [
            HookPoint(attn.q_proj, "out", "attn.hook_q", heads(self.config.num_attention_heads)),
            HookPoint(attn.k_proj, "out", "attn.hook_k", heads(self.n_kv_heads())),
        ]

    def mlp_hooks(self, mlp) -> list[HookPoint]:
        return [
            HookPoint(mlp.gate_proj, "out", "mlp.hook_pre"),
            HookPoint(mlp.up_proj, "out", "mlp.hook_pre_linear"),
            HookPoint(mlp.down_proj, "in", "mlp.hook_post"),
            HookPoint(mlp, "out", "hook_mlp_out"),
        ]

    def block_hooks(self, layer) -> list[HookPoint]:
        return [
            HookPoint(layer, "in", "hook_resid_pre"),
            HookPoint(layer.input_layernorm, "out", "ln1.hook_normalized"),
            *self.attention_hooks(layer.self_attn),
            HookPoint(layer.self_attn, "out", "hook_attn_out"),
            HookPoint(layer.post_attention_layernorm, "in", "hook_resid_mid"),
            HookPoint(layer.post_attention_layernorm, "out", "ln2.hook_normalized"),
            *self.mlp_hooks(layer.mlp),
            HookPoint(layer, "out", "hook_resid_post"),
        ]
