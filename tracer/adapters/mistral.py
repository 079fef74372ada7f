"""Mistral: the Llama block with sliding-window attention.

Every layer attends to the last `sliding_window` positions only; the mask comes from
transformers' sliding-window mask builder, so the recorded pattern shows the window. At decode
the cache keeps only the window, so S = min(position + 1, sliding_window).
"""

from __future__ import annotations

from .llama import LlamaAdapter


class MistralAdapter(LlamaAdapter):
    family = "mistral"
    model_types = ("mistral",)
    data_flow = (
        "ln1 = RMSNorm(resid_pre)",
        "q, k, v = ln1·W_Q, ln1·W_K, ln1·W_V; rot_q, rot_k = RoPE(q, k)",
        "pattern = softmax(rot_q·rot_kᵀ/√d_head + sliding-window causal mask)  (keys in (pos - window, pos])",
        "z = pattern·v; attn_out = z·W_O; resid_mid = resid_pre + attn_out",
        "ln2 = RMSNorm(resid_mid); post = silu(ln2·W_gate) * (ln2·W_up)",
        "mlp_out = post·W_down; resid_post = resid_mid + mlp_out",
    )

    def layer_types(self) -> list[str] | None:
        kind = "sliding_attention" if getattr(self.config, "sliding_window", None) else "full_attention"
        return [kind] * self.config.num_hidden_layers
