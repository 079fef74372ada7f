"""SmolLM3: the Llama block, with RoPE switched off on some layers (NoPE: every 4th by default).

On a NoPE layer the attention function receives q and k unrotated: `hook_rot_q` = `hook_q` there
(the rotation is the identity). The manifest lists those layers in `nope_layers`.
"""

from __future__ import annotations

from .llama import LlamaAdapter


class SmolLM3Adapter(LlamaAdapter):
    family = "smollm3"
    model_types = ("smollm3",)
    data_flow = (
        "ln1 = RMSNorm(resid_pre)",
        "q, k, v = ln1·W_Q, ln1·W_K, ln1·W_V; rot_q, rot_k = RoPE(q, k), or q, k unchanged on NoPE layers",
        "pattern = softmax(rot_q·rot_kᵀ/√d_head + causal mask); z = pattern·v",
        "attn_out = z·W_O; resid_mid = resid_pre + attn_out",
        "ln2 = RMSNorm(resid_mid); post = silu(ln2·W_gate) * (ln2·W_up)",
        "mlp_out = post·W_down; resid_post = resid_mid + mlp_out",
    )

    def nope_layers(self) -> list[int]:
        """Layers that apply no rotary embedding (config.no_rope_layers[i] == 0)."""
        flags = getattr(self.config, "no_rope_layers", None) or [1] * self.config.num_hidden_layers
        return [i for i, use_rope in enumerate(flags) if not use_rope]

    def sliding_window(self) -> int | None:
        return super().sliding_window() if getattr(self.config, "use_sliding_window", False) else None

    def layer_types(self) -> list[str] | None:
        types = super().layer_types()
        if types and not getattr(self.config, "use_sliding_window", False):
            return ["full_attention"] * len(types)
        return types

    def facts(self) -> dict:
        facts = super().facts()
        facts.update(nope_layers=self.nope_layers())
        return facts
