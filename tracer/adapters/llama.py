"""Llama layout: SmolLM2, Llama 2/3, Mistral (sliding window), Qwen2 (q/k/v bias).

    resid_pre ─ input_layernorm ─ q/k/v_proj ─ RoPE ─ attention ─ o_proj ─(+)─ resid_mid
    resid_mid ─ post_attention_layernorm ─ silu(gate_proj) * up_proj ─ down_proj ─(+)─ resid_post
"""

from __future__ import annotations

from .base import Adapter, HookPoint, heads


class LlamaAdapter(Adapter):
    family = "llama"
    model_types = ("llama", "mistral", "qwen2")

    def block_hooks(self, layer) -> list[HookPoint]:
        attn, mlp = layer.self_attn, layer.mlp
        n_heads = self.config.num_attention_heads
        n_kv = getattr(self.config, "num_key_value_heads", None) or n_heads
        return [
            HookPoint(layer, "in", "hook_resid_pre"),
            HookPoint(layer.input_layernorm, "out", "ln1.hook_normalized"),
            HookPoint(attn.q_proj, "out", "attn.hook_q", heads(n_heads)),
            HookPoint(attn.k_proj, "out", "attn.hook_k", heads(n_kv)),
            HookPoint(attn, "out", "hook_attn_out"),
            HookPoint(layer.post_attention_layernorm, "in", "hook_resid_mid"),
            HookPoint(layer.post_attention_layernorm, "out", "ln2.hook_normalized"),
            HookPoint(mlp.gate_proj, "out", "mlp.hook_pre"),
            HookPoint(mlp.up_proj, "out", "mlp.hook_pre_linear"),
            HookPoint(mlp.down_proj, "in", "mlp.hook_post"),
            HookPoint(mlp, "out", "hook_mlp_out"),
            HookPoint(layer, "out", "hook_resid_post"),
        ]

    def facts(self) -> dict:
        facts = super().facts()
        facts["family"] = {"mistral": "mistral", "qwen2": "qwen2"}.get(self.config.model_type, "llama")
        return facts
