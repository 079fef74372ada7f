"""GPT-NeoX / Pythia: LayerNorm, fused per-head q|k|v, partial rotary, parallel attention and MLP.

    parallel (use_parallel_residual, the default):
        resid_post = resid_pre + attn(ln1(resid_pre)) + mlp(ln2(resid_pre))     (no resid_mid)
    sequential:
        resid_mid = resid_pre + attn(ln1(resid_pre)); resid_post = resid_mid + mlp(ln2(resid_mid))

query_key_value's output is laid out per head as [q | k | v] (3·d_head per head). RoPE turns
only the first `rotary_dim` features of each head; the rest pass through.
"""

from __future__ import annotations

import torch

from .base import Adapter, HookPoint, Layout
from .slots import RESID_MID, without


def _qkv_part(n_heads: int, which: int):
    """[B, T, n_heads * 3 * d_head] -> [T, n_heads, d_head]: q (0), k (1) or v (2) of each head."""

    def split(t: torch.Tensor) -> torch.Tensor:
        return t[0].reshape(t.shape[1], n_heads, 3, -1)[:, :, which]

    return split


class GPTNeoXAdapter(Adapter):
    family = "gpt_neox"
    model_types = ("gpt_neox",)
    norm = "layernorm"
    gated_mlp = False
    layout = Layout(qkv="fused_heads", qkv_bias=True, out_bias=True)
    modules = {"ln1": "input_layernorm", "attn": "attention", "ln2": "post_attention_layernorm", "mlp": "mlp"}

    def __init__(self, model):
        super().__init__(model)
        self.parallel_attn_mlp = bool(getattr(self.config, "use_parallel_residual", True))
        if self.parallel_attn_mlp:
            self.slots = without(self.slots, RESID_MID)  # attention and MLP both read resid_pre

    @property
    def data_flow(self) -> tuple[str, ...]:
        attn = (
            "ln1 = LayerNorm(resid_pre); [q|k|v] per head = ln1·W_QKV + b_QKV",
            f"rot_q, rot_k = RoPE on the first {self.rotary_dim()} of {self.d_head()} features per head (rest unrotated)",
            "pattern = softmax(rot_q·rot_kᵀ/√d_head + causal mask); z = pattern·v; attn_out = z·W_O + b_O",
        )
        if self.parallel_attn_mlp:
            return attn + (
                "ln2 = LayerNorm(resid_pre) (parallel: the MLP reads the block input, not resid_mid)",
                "post = gelu(ln2·W_in + b_in); mlp_out = post·W_out + b_out",
                "resid_post = resid_pre + attn_out + mlp_out (no resid_mid)",
            )
        return attn + (
            "resid_mid = resid_pre + attn_out; ln2 = LayerNorm(resid_mid)",
            "post = gelu(ln2·W_in + b_in); mlp_out = post·W_out + b_out; resid_post = resid_mid + mlp_out",
        )

    def base(self):
        return self.model.gpt_neox

    def embed(self):
        return self.base().embed_in

    def final_norm(self):
        return self.base().final_layer_norm

    def lm_head(self):
        return self.model.get_output_embeddings()  # `lm_head` (older releases: `embed_out`)

    def d_head(self) -> int:
        return self.config.hidden_size // self.config.num_attention_heads

    def attention_hooks(self, attn) -> list[HookPoint]:
        n = self.config.num_attention_heads
        return [
            HookPoint(attn.query_key_value, "out", "attn.hook_q", _qkv_part(n, 0)),
            HookPoint(attn.query_key_value, "out", "attn.hook_k", _qkv_part(n, 1)),
        ]

    def mlp_hooks(self, mlp) -> list[HookPoint]:
        return [HookPoint(mlp.dense_h_to_4h, "out", "mlp.hook_pre"), HookPoint(mlp.dense_4h_to_h, "in", "mlp.hook_post")]

    def facts(self) -> dict:
        facts = super().facts()
        facts.update(n_ctx=self.config.max_position_embeddings)
        return facts
