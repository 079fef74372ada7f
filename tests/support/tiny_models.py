"""Tiny random models built from transformers configs (real code paths, no download) and a
byte-level tokenizer for them."""

from __future__ import annotations

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers
from transformers import AutoConfig, AutoModelForCausalLM, PreTrainedTokenizerFast

SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
VOCAB_SIZE = 256 + len(SPECIALS)
CHAT_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def byte_tokenizer(chat: bool = False) -> PreTrainedTokenizerFast:
    """One token per byte (GPT-2 byte alphabet, so a space shows as Ġ) plus three special tokens."""
    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    vocab = {ch: i for i, ch in enumerate(alphabet)}
    for s in SPECIALS:
        vocab[s] = len(vocab)
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        eos_token="<|endoftext|>",
        bos_token="<|endoftext|>",
        additional_special_tokens=SPECIALS[1:],
    )
    if chat:
        fast.chat_template = CHAT_TEMPLATE
    return fast


FAMILY_CONFIGS = {
    "llama": dict(
        model_type="llama",
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,  # GQA: two query heads per KV head
        max_position_embeddings=256,
        rms_norm_eps=1e-5,
    ),
    "gpt2": dict(model_type="gpt2", n_embd=64, n_layer=2, n_head=4, n_positions=256),
}

# The other families of tests/tracer/test_families.py: tiny, with each family's specifics switched on
# (sliding windows smaller than the test sequence, soft-caps low enough to bend the values).
_SMALL = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4, max_position_embeddings=256)
FAMILY_CONFIGS.update(
    {
        "mistral": dict(model_type="mistral", **_SMALL, num_key_value_heads=2, head_dim=16, sliding_window=4),
        "qwen2": dict(model_type="qwen2", **_SMALL, num_key_value_heads=2),  # q/k/v bias
        "qwen3": dict(model_type="qwen3", **_SMALL, num_key_value_heads=2, head_dim=16),  # q_norm / k_norm
        "phi3": dict(  # partial rotary, as Phi-4-mini
            model_type="phi3", **_SMALL, num_key_value_heads=2, pad_token_id=None,
            rope_parameters={"rope_type": "default", "rope_theta": 10000.0, "partial_rotary_factor": 0.5},
        ),
        "gemma2": dict(
            model_type="gemma2",
            **_SMALL,
            num_key_value_heads=2,
            head_dim=16,
            query_pre_attn_scalar=16,
            sliding_window=4,
            layer_types=["sliding_attention", "full_attention"],
            attn_logit_softcapping=2.0,
            final_logit_softcapping=3.0,
            pad_token_id=None,
        ),
        "gemma3": dict(
            model_type="gemma3_text",
            **_SMALL,
            num_key_value_heads=2,
            head_dim=16,
            query_pre_attn_scalar=16,
            sliding_window=4,
            layer_types=["sliding_attention", "full_attention"],
            final_logit_softcapping=3.0,
            pad_token_id=None,
        ),
        "gpt_neox": dict(model_type="gpt_neox", **{**_SMALL, "intermediate_size": 256}),  # parallel, rotary 1/4
        "gpt_neox_sequential": dict(model_type="gpt_neox", **{**_SMALL, "intermediate_size": 256}, use_parallel_residual=False),
        "mixtral": dict(
            model_type="mixtral", **{**_SMALL, "intermediate_size": 64}, num_key_value_heads=2, num_local_experts=4, num_experts_per_tok=2
        ),
        "qwen3_moe": dict(
            model_type="qwen3_moe", **_SMALL, num_key_value_heads=2, head_dim=16, num_experts=4, num_experts_per_tok=2,
            moe_intermediate_size=32, norm_topk_prob=False,  # top-k weights used as they are (not renormalised)
        ),
        # families whose blocks vary the common shape (tests/tracer/test_families_variant_blocks.py)
        "olmo2": dict(model_type="olmo2", **_SMALL, num_key_value_heads=2, pad_token_id=None),  # post-norms, q/k norm
        "smollm3": dict(  # every 2nd layer without RoPE (NoPE), a sliding window on none
            model_type="smollm3", **_SMALL, num_key_value_heads=2, no_rope_layer_interval=2, pad_token_id=None,
        ),
        "glm4": dict(model_type="glm4", **_SMALL, num_key_value_heads=2, head_dim=16, pad_token_id=None),  # sandwich norms, partial rotary
        "deepseek_v3": dict(  # MLA (q and kv latents, rope/nope split, d_v != d_qk), shared + routed experts
            model_type="deepseek_v3", **_SMALL, num_key_value_heads=4, q_lora_rank=24, kv_lora_rank=16,
            qk_rope_head_dim=8, qk_nope_head_dim=16, v_head_dim=12, n_routed_experts=4, num_experts_per_tok=2,
            n_shared_experts=1, moe_intermediate_size=32, first_k_dense_replace=1, n_group=1, topk_group=1,
            pad_token_id=None,
        ),
        "gpt_oss": dict(  # attention sinks, alternating sliding/full layers, MoE
            model_type="gpt_oss", **{**_SMALL, "intermediate_size": 32}, num_key_value_heads=2, head_dim=16,
            num_local_experts=4, num_experts_per_tok=2, sliding_window=4,
            layer_types=["sliding_attention", "full_attention"], pad_token_id=None,
        ),
        "qwen3_next": dict(  # hybrid: linear-attention (gated delta net) layer, then a full-attention layer
            model_type="qwen3_next", **_SMALL, num_key_value_heads=2, head_dim=16,
            layer_types=["linear_attention", "full_attention"], linear_num_value_heads=4, linear_num_key_heads=2,
            linear_key_head_dim=8, linear_value_head_dim=8, linear_conv_kernel_dim=4, num_experts=4,
            num_experts_per_tok=2, moe_intermediate_size=32, shared_expert_intermediate_size=32, pad_token_id=None,
        ),
        # no adapter: traced by the generic fallback
        "starcoder2": dict(  # LayerNorm with biases, RoPE, a sliding window: attention through the interface
            model_type="starcoder2", **_SMALL, num_key_value_heads=2, sliding_window=4, pad_token_id=None,
        ),
        "opt": dict(
            model_type="opt", hidden_size=64, ffn_dim=128, num_hidden_layers=2, num_attention_heads=4,
            max_position_embeddings=256, word_embed_proj_dim=64, pad_token_id=None,
        ),
    }
)


def tiny_model(family: str = "llama", seed: int = 0, **overrides):
    """A tiny random model of `family` in eval mode, float32, on the CPU."""
    cfg = dict(FAMILY_CONFIGS[family])
    cfg.update(overrides)
    model_type = cfg.pop("model_type")
    cfg.setdefault("vocab_size", VOCAB_SIZE)
    eos = VOCAB_SIZE - len(SPECIALS)  # <|endoftext|>
    cfg.setdefault("eos_token_id", eos)
    cfg.setdefault("bos_token_id", eos)
    config = AutoConfig.for_model(model_type, **cfg)
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config)
    with torch.no_grad():  # a sharper random model: fewer near-ties between top logits
        for p in model.parameters():
            if p.dim() >= 2:
                p.mul_(3.0)
    model.generation_config.eos_token_id = config.eos_token_id
    model.generation_config.pad_token_id = config.eos_token_id
    return model.eval()
