"""What the operation lines need to know: model facts, the family's projection layout and a
step's geometry (T new positions, S keys per layer), all from the manifest and step headers."""

from __future__ import annotations

from dataclasses import dataclass

from stepscope.tracer.model_info import is_generic_fallback
from stepscope.tracer.names import block_name
from stepscope.tui.views.heatmap import keys_of, layer_window


def dims(*sizes) -> str:
    return "[" + ", ".join(str(s) for s in sizes) + "]"


QKV_LAYOUTS = ("separate", "fused", "fused_heads", "conv1d")


@dataclass(frozen=True)
class Layout:
    """How the family lays out its projections: the manifest's `layout` fact (defaults: separate
    q/k/v projections without biases, as in Llama, for traces that do not say)."""

    qkv: str = "separate"  # "separate" | "fused" (Phi-3 qkv_proj) | "fused_heads" (NeoX) | "conv1d" (GPT-2)
    qkv_bias: bool = False  # q/k/v projections have biases (Qwen2, GPT-2, NeoX)
    out_bias: bool = False  # W_O and the MLP projections have biases (GPT-2, NeoX)
    mlp_fused: bool = False  # gate and up in one gate_up_proj (Phi-3)
    conv1d: bool = False  # GPT-2's Conv1D modules (weights stored [in, out])

    @classmethod
    def from_fact(cls, fact) -> Layout:
        """The layout a manifest states; anything it does not state (or states oddly) keeps the default."""
        if not isinstance(fact, dict):
            return cls()
        qkv = fact.get("qkv")
        flags = {k: bool(fact[k]) for k in ("qkv_bias", "out_bias", "mlp_fused", "conv1d") if k in fact}
        return cls(qkv=qkv if qkv in QKV_LAYOUTS else "separate", **flags)


class Facts:
    """Model facts and step geometry used to write operation lines."""

    def __init__(self, step, model: dict):
        start, end = step.positions
        self.step, self.model = step, model
        self.T, self.end = end - start, end
        self.generic = is_generic_fallback(model)
        self.layout = Layout.from_fact(model.get("layout"))
        self.d = int(model.get("d_model") or 0)
        self.H = int(model.get("n_heads") or 0)
        self.Hk = int(model.get("n_kv_heads") or self.H)
        self.dh = int(model.get("d_head") or (self.d // max(1, self.H)))
        self.dv = int(model.get("d_head_v") or self.dh)  # v/z head size (MLA: its own, fact d_head_v)
        self.m = int(model.get("d_mlp") or 0)
        self.V = int(model.get("vocab_size") or 0)
        self.L = int(model.get("n_layers") or 0)
        self.E = int(model.get("n_experts") or 0)
        self.top_k = int(model.get("experts_per_token") or 0)
        self.norm = "LayerNorm" if model.get("norm") == "layernorm" else "RMSNorm"
        self.norm_weight = f" · ({model['norm_weight']})" if model.get("norm_weight") else ""  # Gemma: x̂·(1 + w)
        self.act = model.get("act") or ("silu" if model.get("gated_mlp") else "gelu")
        self.gated = bool(model.get("gated_mlp"))
        self.parallel = bool(model.get("parallel_attn_mlp"))
        self.rotary = model.get("positional") == "rotary"
        self.rotary_dim = model.get("rotary_dim")
        self.post_norms = bool(model.get("post_norms"))

    def has(self, layer: int, rest: str) -> bool:
        """A family-specific tensor exists when this step recorded it."""
        return block_name(layer, rest) in self.step

    def keys(self, layer: int) -> tuple[int, int]:
        """(first key position, S) of this step at a layer (the window only, on sliding layers)."""
        return keys_of(self.step, self.model, layer)

    def window(self, layer: int) -> int | None:
        return layer_window(self.model, layer)

    def moe(self, layer: int) -> bool:
        """This layer's MLP is a mixture of experts (Qwen3-MoE may keep dense layers)."""
        if not self.E:
            return False
        if self.has(layer, "mlp.hook_router_probs") or self.has(layer, "mlp.hook_expert_ids"):
            return True
        return layer not in (self.model.get("mlp_only_layers") or []) and not self.has(layer, "mlp.hook_post")

    def positions(self) -> str:
        start, end = self.step.positions
        return f"position {start}" if end - start == 1 else f"positions {start}..{end - 1}"

    def td(self) -> str:
        return dims(self.T, self.d)

