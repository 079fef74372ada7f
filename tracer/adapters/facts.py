"""What a model type's config means when its parameters are counted without the weights.

Torch-free data, read by `tracer/config_facts.py` (`stepscope info` on a config, a cached hub id or
a GGUF header), kept with the adapters so that no family name is written outside tracer/adapters/.
A model type not listed here is counted as a Llama-style decoder (`ConfigRules()`); `checked`
marks the ones whose counts tests/test_config_facts.py compares against real weights.

This package's `__init__` imports nothing, so reading this module never imports torch.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ConfigRules:
    """How one model type's config maps to parameters (the defaults: a Llama-style decoder)."""

    layernorm: bool = False  # LayerNorm (weight and bias) and an up → act → down MLP with biases (no gate)
    # attention biases: "config" q, k, v, o when config.attention_bias; "all" always; "qkv" q, k, v
    # always (no o); "qkv_config" q, k, v when config.attention_bias (never o)
    attention_bias: str = "config"
    qk_norm: str | None = None  # "per_head": [d_head] q/k norm weights; "full": over n_heads·d_head and n_kv_heads·d_head
    norms_per_layer: int = 2  # 4 with norms before and after both attention and MLP
    tied_default: bool = True  # tie_word_embeddings when the config does not say
    learned_positions: bool = False  # an absolute position embedding table
    position_offset: int = 0  # rows of that table beyond n_positions
    attention_sinks: bool = False  # one sink logit per head
    output_gate: bool = False  # an attention output gate that shares q_proj (n_heads·d_head more outputs)
    expert_biases: bool = False  # biases in every expert's projections and in the router
    checked: bool = False  # counts compared against the weights of a model built from the config


LLAMA_STYLE = ConfigRules()
_LAYERNORM = ConfigRules(layernorm=True)
_LAYERNORM_BIASED = ConfigRules(layernorm=True, attention_bias="all")

CONFIG_RULES: dict[str, ConfigRules] = {
    "llama": ConfigRules(tied_default=False, checked=True),
    "mistral": ConfigRules(tied_default=False, checked=True),
    "mixtral": ConfigRules(tied_default=False, checked=True),
    "qwen2": ConfigRules(attention_bias="qkv", tied_default=False, checked=True),
    "qwen2_moe": ConfigRules(attention_bias="qkv", tied_default=False),
    "qwen3": ConfigRules(qk_norm="per_head", checked=True),
    "qwen3_moe": ConfigRules(qk_norm="per_head", tied_default=False, checked=True),
    "qwen3_next": ConfigRules(qk_norm="per_head", output_gate=True, checked=True),
    "phi3": ConfigRules(tied_default=False, checked=True),
    "smollm3": ConfigRules(checked=True),
    "gemma2": ConfigRules(norms_per_layer=4, checked=True),
    "gemma3": ConfigRules(qk_norm="per_head", norms_per_layer=4),
    "gemma3_text": ConfigRules(qk_norm="per_head", norms_per_layer=4, checked=True),
    "glm": ConfigRules(attention_bias="qkv_config"),
    "glm4": ConfigRules(attention_bias="qkv_config", norms_per_layer=4, tied_default=False, checked=True),
    "olmo2": ConfigRules(qk_norm="full", tied_default=False, checked=True),
    "deepseek_v3": ConfigRules(tied_default=False, checked=True),
    "gpt_oss": ConfigRules(attention_sinks=True, expert_biases=True, tied_default=False, checked=True),
    "gpt2": ConfigRules(layernorm=True, attention_bias="all", learned_positions=True, checked=True),
    "gpt_neox": ConfigRules(layernorm=True, attention_bias="all", tied_default=False, checked=True),
    "opt": ConfigRules(layernorm=True, attention_bias="all", learned_positions=True, position_offset=2, checked=True),
    "gpt_bigcode": ConfigRules(layernorm=True, learned_positions=True),
    "phi": _LAYERNORM_BIASED,
    "starcoder2": _LAYERNORM_BIASED,
    "gptj": _LAYERNORM,
    "bloom": _LAYERNORM,
    "falcon": _LAYERNORM,
    "codegen": _LAYERNORM,
}

CHECKED = frozenset(t for t, rules in CONFIG_RULES.items() if rules.checked)

# GGUF `general.architecture` -> transformers model_type, where they differ or are known
GGUF_MODEL_TYPES = {"llama": "llama", "qwen2": "qwen2", "qwen3": "qwen3", "gpt2": "gpt2", "mistral": "mistral",
                    "phi3": "phi3", "gemma2": "gemma2", "gemma3": "gemma3_text", "qwen2moe": "qwen2_moe",
                    "qwen3moe": "qwen3_moe"}


def config_rules(model_type: str) -> ConfigRules:
    """The counting rules of a model type (a Llama-style decoder when it is not listed)."""
    return CONFIG_RULES.get(model_type, LLAMA_STYLE)
