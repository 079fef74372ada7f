"""The recorded-name vocabulary (TransformerLens hook names, no batch axis) and its forward order.

Norms use TransformerLens's meaning: `P.hook_scale` and `P.hook_normalized` (x / scale) come
before the weight; `P.hook_out` is the norm module's output (P = ln1, ln2, ln_final, ...).

T = positions computed in this step (prompt length at prefill, 1 at a decode step),
S = key positions attended (cache + new). Shapes are a contract; readers rely on them.

Pure Python: imported by the TUI, so it never imports torch.
"""

from __future__ import annotations

import fnmatch
import re

# name (inside a block, without the "blocks.{L}." prefix) -> shape, in forward order
BLOCK_NAMES: dict[str, str] = {
    "hook_resid_pre": "[T, d_model]",
    "ln1.hook_scale": "[T, 1]",  # TransformerLens: sqrt(mean(x²) + eps) of the norm's input (LayerNorm: centred)
    "ln1.hook_normalized": "[T, d_model]",  # x / scale, before the weight (and bias)
    "ln1.hook_out": "[T, d_model]",  # the norm module's output (normalized · w [+ b])
    "attn.hook_q_latent": "[T, q_lora_rank]",  # MLA (DeepSeek-V3): normed compressed query, input of W_UQ
    "attn.hook_kv_latent": "[T, kv_lora_rank]",  # MLA: normed compressed key/value, what the cache keeps
    "attn.hook_q": "[T, n_heads, d_head]",
    "attn.hook_k": "[T, n_kv_heads, d_head]",
    "attn.hook_v": "[T, n_kv_heads, d_head]",
    "attn.hook_q_normed": "[T, n_heads, d_head]",  # q after per-head RMSNorm (Qwen3, Gemma 3)
    "attn.hook_k_normed": "[T, n_kv_heads, d_head]",
    "attn.hook_rot_q": "[T, n_heads, d_head]",  # after RoPE
    "attn.hook_rot_k": "[T, n_kv_heads, d_head]",
    "attn.hook_attn_scores": "[n_heads, T, S]",  # scaled, masked (-inf), pre-softmax
    "attn.hook_pattern": "[n_heads, T, S]",
    "attn.hook_z": "[T, n_heads, d_head]",
    "attn.hook_gate": "[T, n_heads, d_head]",  # output gate logits: attn_out = (z ⊙ σ(gate))·W_O (Qwen3-Next)
    "linear_attn.hook_core_out": "[T, n_v_heads, d_v]",  # linear attention (Gated DeltaNet): delta-rule output
    "linear_attn.hook_gate": "[T, n_v_heads, d_v]",  # its output gate (silu) after the norm
    "linear_attn.hook_state": "[n_v_heads, d_k, d_v]",  # its recurrent state after the step (with a cache)
    "hook_attn_out": "[T, d_model]",
    "ln1_post.hook_scale": "[T, 1]",  # post-attention norm (Gemma 2/3)
    "ln1_post.hook_normalized": "[T, d_model]",  # x / scale, before the weight (and bias)
    "ln1_post.hook_out": "[T, d_model]",  # the norm module's output (normalized · w [+ b])
    "hook_resid_mid": "[T, d_model]",
    "ln2.hook_scale": "[T, 1]",  # TransformerLens: sqrt(mean(x²) + eps) of the norm's input (LayerNorm: centred)
    "ln2.hook_normalized": "[T, d_model]",  # x / scale, before the weight (and bias)
    "ln2.hook_out": "[T, d_model]",  # the norm module's output (normalized · w [+ b])
    "mlp.hook_router_probs": "[T, n_experts]",  # mixture of experts
    "mlp.hook_expert_ids": "[T, top_k_experts]",
    "mlp.hook_shared_out": "[T, d_model]",  # shared experts' output (DeepSeek-V3), part of hook_mlp_out
    "mlp.hook_pre": "[T, d_mlp]",  # pre-activation (gate projection in gated MLPs)
    "mlp.hook_pre_linear": "[T, d_mlp]",  # up projection (gated MLPs)
    "mlp.hook_post": "[T, d_mlp]",  # input of the down projection
    "hook_mlp_out": "[T, d_model]",
    "ln2_post.hook_scale": "[T, 1]",  # post-MLP norm (Gemma 2/3)
    "ln2_post.hook_normalized": "[T, d_model]",  # x / scale, before the weight (and bias)
    "ln2_post.hook_out": "[T, d_model]",  # the norm module's output (normalized · w [+ b])
    "hook_resid_post": "[T, d_model]",
}

# block names only some families have, recorded in addition to the common vocabulary
FAMILY_EXTRAS: tuple[str, ...] = (
    "attn.hook_q_normed",
    "attn.hook_k_normed",
    "ln1_post.hook_scale",
    "ln1_post.hook_normalized",
    "ln1_post.hook_out",
    "ln2_post.hook_scale",
    "ln2_post.hook_normalized",
    "ln2_post.hook_out",
    "mlp.hook_router_probs",
    "mlp.hook_expert_ids",
    "attn.hook_q_latent",
    "attn.hook_kv_latent",
    "mlp.hook_shared_out",
    "attn.hook_gate",
    "linear_attn.hook_core_out",
    "linear_attn.hook_gate",
    "linear_attn.hook_state",
)

# block names recorded at the step's predicting (last) position only, for direct logit attribution
LAST_ROW_NAMES: dict[str, str] = {
    "attn.hook_result": "[n_heads, d_model]",  # each head's z·W_O; TransformerLens's [T, n_heads, d_model] at the last row
    "attn.hook_o_input": "[n_heads, d_head]",  # the output projection's input (hook_z, gated where the family gates it)
}
RESULT, O_INPUT = "attn.hook_result", "attn.hook_o_input"  # a lazy trace stores O_INPUT; the reader computes RESULT

HEAD_NAMES: dict[str, str] = {
    "hook_embed": "[T, d_model]",
    "hook_pos_embed": "[T, d_model]",  # absolute position models only
}

FINAL_NAMES: dict[str, str] = {
    "ln_final.hook_scale": "[T, 1]",  # TransformerLens: sqrt(mean(x²) + eps) of the final norm's input (LayerNorm: centred)
    "ln_final.hook_normalized": "[T, d_model]",  # x / scale, before the weight (and bias)
    "ln_final.hook_out": "[T, d_model]",  # the norm module's output (normalized · w [+ b])
    "logits": "[T, vocab]",
}

# Sampling and logit lens, for the predicting (last) position of the step.
SAMPLING_NAMES: dict[str, str] = {
    "logit_lens.ids": "[n_layers, k]",  # top-k ids of unembed(ln_final(resid_post)) per layer
    "logit_lens.probs": "[n_layers, k]",
    "logit_lens.resid": "[n_layers, d_model]",  # the lens input rows, stored only when resid_post is not recorded
    "sample.candidate_ids": "[N]",  # by logit, best first: the kept set, then 20 removed ones
    "sample.candidate_logits": "[N]",  # raw logits
    "sample.candidate_raw_probs": "[N]",  # softmax(raw logits)
    "sample.candidate_temp_probs": "[N]",  # softmax(logits / T) after top-k
    "sample.candidate_probs": "[N]",  # final sampling distribution (0 outside the kept set)
    "sample.candidate_cumulative": "[N]",  # cumulative of candidate_temp_probs
}

_BLOCK_RE = re.compile(r"^blocks\.(\d+)\.(.+)$")
_HEAD_ORDER = {n: i for i, n in enumerate(HEAD_NAMES)}
_BLOCK_LIST = [*BLOCK_NAMES]
_BLOCK_LIST.insert(_BLOCK_LIST.index("hook_attn_out"), "attn.hook_result")
_BLOCK_LIST.insert(_BLOCK_LIST.index("attn.hook_result"), "attn.hook_o_input")
_BLOCK_ORDER = {n: i for i, n in enumerate(_BLOCK_LIST)}
_TAIL_ORDER = {n: i for i, n in enumerate([*FINAL_NAMES, *SAMPLING_NAMES])}


def block_name(layer: int, name: str) -> str:
    """`blocks.{layer}.{name}`."""
    return f"blocks.{layer}.{name}"


def split_block_name(name: str) -> tuple[int, str] | None:
    """`blocks.3.attn.hook_q` -> (3, "attn.hook_q"); None for names outside blocks."""
    m = _BLOCK_RE.match(name)
    return (int(m.group(1)), m.group(2)) if m else None


def order_key(name: str) -> tuple:
    """Sort key putting names in forward-pass order: embed, blocks 0..L-1, ln_final, logits, sampling."""
    if name in _HEAD_ORDER:
        return (0, 0, _HEAD_ORDER[name], name)
    parts = split_block_name(name)
    if parts is not None:
        layer, rest = parts
        return (1, layer, _BLOCK_ORDER.get(rest, len(_BLOCK_ORDER)), rest)
    return (2, 0, _TAIL_ORDER.get(name, len(_TAIL_ORDER)), name)


def forward_order(names) -> list[str]:
    """Names sorted in forward-pass order."""
    return sorted(names, key=order_key)


def expand_norm_names(names) -> set[str]:
    """A norm declared as `P.hook_normalized` records P.hook_scale, P.hook_normalized and P.hook_out."""
    out = set()
    for n in names:
        out.add(n)
        if n.endswith(".hook_normalized"):
            prefix = n[: -len(".hook_normalized")]
            out |= {prefix + ".hook_scale", prefix + ".hook_out"}
    return out


def shape_doc(name: str) -> str:
    """The documented shape of a recorded name, e.g. "[T, n_heads, d_head]", or "" if unknown."""
    parts = split_block_name(name)
    if parts is not None:
        return BLOCK_NAMES.get(parts[1]) or LAST_ROW_NAMES.get(parts[1], "")
    return HEAD_NAMES.get(name) or FINAL_NAMES.get(name) or SAMPLING_NAMES.get(name, "")


class NameFilter:
    """TransformerLens-style name patterns (`blocks.*.attn.hook_pattern`, `*resid_post`, `logits`).

    An empty pattern list keeps everything. Sampling and logit-lens names are always kept: the
    debugger needs them to show what was chosen.
    """

    def __init__(self, patterns: list[str] | None = None):
        self.patterns = [p.strip() for p in (patterns or []) if p.strip()]

    def __call__(self, name: str) -> bool:
        if not self.patterns or name.startswith(("sample.", "logit_lens.")):
            return True
        return any(fnmatch.fnmatchcase(name, p) for p in self.patterns)
