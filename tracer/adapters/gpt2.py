"""GPT-2: learned absolute positions, Conv1D projections, LayerNorm with bias, GELU MLP.

    resid_pre ─ ln_1 ─ c_attn (fused q|k|v) ─ attention ─ c_proj ─(+)─ resid_mid
    resid_mid ─ ln_2 ─ c_fc ─ gelu ─ c_proj ─(+)─ resid_post
"""

from __future__ import annotations

from .base import Adapter, HookPoint, Layout


class GPT2Adapter(Adapter):
    family = "gpt2"
    model_types = ("gpt2",)
    rotary = False
    norm = "layernorm"
    gated_mlp = False
    layout = Layout(qkv="conv1d", qkv_bias=True, out_bias=True, conv1d=True)
    modules = {"ln1": "ln_1", "attn": "attn", "ln2": "ln_2", "mlp": "mlp"}
    data_flow = (
        "resid_pre(block 0) = embed + pos_embed (learned absolute positions)",
        "ln1 = LayerNorm(resid_pre); q|k|v = ln1·W_QKV + b_QKV (Conv1D c_attn, split in three)",
        "pattern = softmax(q·kᵀ/√d_head + causal mask); z = pattern·v",
        "attn_out = z·W_O + b_O; resid_mid = resid_pre + attn_out",
        "ln2 = LayerNorm(resid_mid); pre = ln2·W_in + b_in; post = gelu(pre)",
        "mlp_out = post·W_out + b_out; resid_post = resid_mid + mlp_out",
    )

    def base(self):
        return self.model.transformer

    def embed(self):
        return self.base().wte

    def pos_embed(self):
        return self.base().wpe

    def layers(self):
        return list(self.base().h)

    def final_norm(self):
        return self.base().ln_f

    def attention_hooks(self, attn) -> list[HookPoint]:
        return []  # q, k and v reach the attention function split from c_attn's output

    def mlp_hooks(self, mlp) -> list[HookPoint]:
        return [HookPoint(mlp.c_fc, "out", "mlp.hook_pre"), HookPoint(mlp.c_proj, "in", "mlp.hook_post")]

    def facts(self) -> dict:
        facts = super().facts()
        c = self.config
        facts.update(d_mlp=c.n_inner or 4 * c.hidden_size, n_ctx=c.n_positions, act=c.activation_function)
        return facts
