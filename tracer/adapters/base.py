"""What an adapter is: where a family keeps each recorded tensor.

An adapter names, for one model family, the modules whose input or output *is* a recorded
tensor (`HookPoint`s), which attention names the traced attention function records, and the
family's architecture facts. Everything else (hooks, recording, sampling, writing) is shared.

A block's hook points come from the standard slots (`slots.BLOCK_SLOTS`) at the modules the
adapter names per role, plus the family's own attention and MLP names. Every subclass that
declares `model_types` registers itself (`registered_adapters`); the package's `registry`
module imports each family's module and picks the adapter for a model.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any, cast

import torch
from torch import nn

from ..distributed import dense
from ..names import BLOCK_NAMES, O_INPUT, expand_norm_names
from .slots import ATTENTION, BLOCK_SLOTS, MLP, ROLES, Slot

Transform = Callable[[torch.Tensor], torch.Tensor]


def rows(t: torch.Tensor) -> torch.Tensor:
    """[B, T, X] -> [T, X] (batch of one)."""
    return t[0]


def heads(n: int) -> Transform:
    """[B, T, n * d_head] -> [T, n, d_head]."""

    def split(t: torch.Tensor) -> torch.Tensor:
        return t[0].reshape(t.shape[1], n, -1)

    return split


def per_head(t: torch.Tensor) -> torch.Tensor:
    """[B, T, n, d_head] -> [T, n, d_head] (already split, e.g. after a per-head norm)."""
    return t[0]


@dataclass(frozen=True)
class HookPoint:
    """`name` is the input (where="in") or output (where="out") of `module`, after `transform`.

    `pick` chooses which input or output: a position (0 = the first positional argument, or the
    first element of a tuple output) or a name (a keyword argument, or an output attribute such
    as `logits` of a ModelOutput). `heads_of`: for a per-head tensor computed from a projection's
    output (a per-head q/k norm after q_proj/k_proj), that projection: under tensor parallelism the
    tensor holds the heads of this rank's slice of it, and its transformed value is joined along
    the head axis (1).
    """

    module: nn.Module
    where: str
    name: str  # block-local ("attn.hook_q") or global ("hook_embed")
    transform: Transform = rows
    pick: int | str = 0
    heads_of: nn.Module | None = None


def norm_kind(module: nn.Module, default: str | None) -> str | None:
    """"layernorm" (centres, then scales) or "rmsnorm", from the module's class; `default` otherwise."""
    name = type(module).__name__.lower()
    if isinstance(module, nn.LayerNorm) or ("layernorm" in name and "rms" not in name):
        return "layernorm"
    return "rmsnorm" if "rms" in name else default


def norm_eps(module: nn.Module) -> float | None:
    """The epsilon a norm module adds under the square root, None when it has none we can find."""
    for attr in ("variance_epsilon", "eps", "epsilon"):
        value = getattr(module, attr, None)
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
    return None


OUT_PROJECTIONS = ("o_proj", "dense", "c_proj", "out_proj")  # attribute names of attention output projections


def out_projection(attn: nn.Module | None) -> nn.Module | None:
    """The attention module's output projection (z·W_O), None when it has none we recognise."""
    for attr in OUT_PROJECTIONS:
        module = getattr(attn, attr, None)
        if module is not None and isinstance(getattr(module, "weight", None), torch.Tensor) and module.weight.dim() == 2:
            return module
    return None


def _live_weight(module: nn.Module, name: str = "weight") -> torch.Tensor:
    """The module's weight (or bias); outside its forward an accelerate-offloaded one is on "meta"
    and lives in the hook's weights map (disk or CPU offload)."""
    w = getattr(module, name)
    if w.device.type == "meta":
        hook = getattr(module, "_hf_hook", None)
        for h in getattr(hook, "hooks", None) or [hook]:
            weights = getattr(h, "weights_map", None)
            if weights is not None:
                return weights[name]
    return w


def _out_weight(proj: nn.Module) -> torch.Tensor:
    """[d_model, n_heads * d_head]: the output projection's current weight (GPT-2's Conv1D stores it transposed)."""
    w = _live_weight(proj)
    return w.t() if type(proj).__name__ == "Conv1D" else w


def head_results(proj: nn.Module, n_heads: int) -> Transform | None:
    """[B, T, n_heads * d_head] input of `proj` -> [n_heads, d_model]: each head's z_h·W_O[h] at the
    LAST position (TransformerLens's `attn.hook_result` row); None when the shapes do not split."""
    if _out_weight(proj).shape[1] % n_heads:
        return None

    def result(t: torch.Tensor) -> torch.Tensor:
        w = dense(_out_weight(proj)).to(t.device)  # [d_model, n_heads * d_head] (current weights, whole under TP)
        z = t[0, -1].reshape(n_heads, -1)  # [n_heads, d_head]
        return torch.einsum("hd,mhd->hm", z.to(w.dtype), w.reshape(w.shape[0], n_heads, -1))  # [n_heads, d_model]

    return result


def head_inputs(n_heads: int) -> Transform:
    """[B, T, n_heads * d_head] input of the output projection -> [n_heads, d_head] at the LAST position."""
    return lambda t: t[0, -1].reshape(n_heads, -1)


def w_o(proj: nn.Module, n_heads: int) -> torch.Tensor:
    """TransformerLens's W_O [n_heads, d_head, d_model] of an output projection (a view: no copy)."""
    w = dense(_out_weight(proj))  # [d_model, n_heads * d_head]
    return w.reshape(w.shape[0], n_heads, -1).permute(1, 2, 0)


class UnsupportedModel(ValueError):
    """The model cannot be traced (not a decoder, or no list of layers to hook)."""


@dataclass(frozen=True)
class Layout:
    """How a family lays out its projections: the manifest's `layout`, read by the TUI's operation lines."""

    qkv: str = "separate"  # "separate" | "fused" (one qkv_proj) | "fused_heads" (per head [q|k|v]) | "conv1d"
    qkv_bias: bool = False  # q/k/v projections have biases
    out_bias: bool = False  # W_O and the MLP projections have biases
    mlp_fused: bool = False  # gate and up in one gate_up_proj
    conv1d: bool = False  # Conv1D modules (weights stored [in, out])


_REGISTERED: dict[str, type[Adapter]] = {}


def registered_adapters() -> dict[str, type[Adapter]]:
    """model_type -> the adapter class that declared it (every imported family module)."""
    return dict(_REGISTERED)


# The Llama-layout block's real equations in recorded names (`Adapter.data_flow`).
LLAMA_DATA_FLOW: tuple[str, ...] = (
    "ln1 = RMSNorm(resid_pre)",
    "q, k, v = ln1·W_Q, ln1·W_K, ln1·W_V; rot_q, rot_k = RoPE(q, k)",
    "pattern = softmax(rot_q·rot_kᵀ/√d_head + causal mask); z = pattern·v",
    "attn_out = z·W_O; resid_mid = resid_pre + attn_out",
    "ln2 = RMSNorm(resid_mid); post = act(ln2·W_gate) * (ln2·W_up)",
    "mlp_out = post·W_down; resid_post = resid_mid + mlp_out",
)


class Adapter:
    """Base adapter: a decoder with `model.model.layers` in the Llama layout.

    Subclasses override what differs. `block_hooks` lists the hook points of one block with
    block-local names, from `slots` at the modules `modules` names; the traced attention
    function records `attention_names`. A subclass that declares `model_types` registers itself.
    """

    family = ""
    model_types: tuple[str, ...] = ()
    min_transformers: str = "0"  # the oldest transformers whose modelling code this adapter matches
    generic_fallback = False  # the adapter for architectures no family adapter knows
    rotary = True
    norm: str | None = "rmsnorm"  # None: unknown (the generic fallback)
    gated_mlp: bool | None = True
    parallel_attn_mlp = False
    norm_weight_offset = 0.0  # the norms multiply by (offset + w): 1.0 in Gemma
    layout = Layout()
    # role -> the block's attribute holding that module (slots.ROLES); a role left out is not there
    modules: dict[str, str] = {"ln1": "input_layernorm", "attn": "self_attn", "ln2": "post_attention_layernorm", "mlp": "mlp"}
    slots: tuple[Slot, ...] = BLOCK_SLOTS

    @property
    def data_flow(self) -> tuple[str, ...]:
        """The block's real equations in recorded names, shown by the TUI instead of a generic diagram
        (a family overrides it with its own, as a class attribute or a property)."""
        return LLAMA_DATA_FLOW

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        unknown = sorted((set(cls.modules) | {s.role for s in cls.slots}) - set(ROLES))
        if unknown:
            raise TypeError(f"{cls.__qualname__}: unknown module roles {unknown} (roles: {', '.join(ROLES)})")
        for model_type in cls.__dict__.get("model_types", ()):
            other = _REGISTERED.get(model_type)
            if other is not None and (other.__module__, other.__qualname__) != (cls.__module__, cls.__qualname__):
                raise TypeError(f"model_type {model_type!r} has two adapters: {other.__qualname__} and {cls.__qualname__}")
            _REGISTERED[model_type] = cls

    def __init__(self, model: nn.Module):
        # A transformers model and its config: their submodules and facts are attributes that vary by
        # family (torch types a submodule attribute as `Tensor | Module`), so both are read dynamically.
        self.model: Any = model
        self.config: Any = model.config

    # -- structure ---------------------------------------------------------------------------
    def base(self) -> Any:  # the decoder body, a transformers module (submodules by attribute)
        return self.model.model

    def embed(self) -> nn.Module:
        return self.base().embed_tokens

    def pos_embed(self) -> nn.Module | None:
        return None

    def layers(self) -> list[nn.Module]:
        return list(self.base().layers)

    def final_norm(self) -> nn.Module:
        return self.base().norm

    def lm_head(self) -> nn.Module:
        return self.model.lm_head

    def attention(self, layer: nn.Module) -> nn.Module | None:
        """The module the traced attention function receives as `module`."""
        return self.slot_module(layer, "attn")

    def n_kv_heads(self) -> int:
        return getattr(self.config, "num_key_value_heads", None) or self.config.num_attention_heads

    def d_head(self) -> int:
        c = self.config
        return getattr(c, "head_dim", None) or c.hidden_size // c.num_attention_heads

    # -- hook points -------------------------------------------------------------------------
    def slot_module(self, layer: nn.Module, role: str) -> nn.Module | None:
        """The block's module in `role` ("block": the block itself), None where the family has none."""
        if role == "block":
            return layer
        attr = self.modules.get(role)
        return getattr(layer, attr) if attr else None

    def attention_hooks(self, attn: Any) -> list[HookPoint]:  # attn: the family's attention module
        """q and k before RoPE (v, rotated q/k, scores, pattern and z come from the attention function)."""
        return [
            HookPoint(attn.q_proj, "out", "attn.hook_q", heads(self.config.num_attention_heads)),
            HookPoint(attn.k_proj, "out", "attn.hook_k", heads(self.n_kv_heads())),
        ]

    def mlp_hooks(self, mlp: Any) -> list[HookPoint]:  # mlp: the family's MLP module
        """The MLP's own names (hook_mlp_out is a standard slot): SwiGLU gate, up and down's input."""
        return [
            HookPoint(mlp.gate_proj, "out", "mlp.hook_pre"),
            HookPoint(mlp.up_proj, "out", "mlp.hook_pre_linear"),
            HookPoint(mlp.down_proj, "in", "mlp.hook_post"),
        ]

    def block_hooks(self, layer: nn.Module) -> list[HookPoint]:
        """The block's hook points in forward order: the slots, with the family's attention and MLP names."""
        points = []
        for slot in self.slots:
            module = self.slot_module(layer, slot.role)
            if module is None:
                continue
            if slot == ATTENTION:
                points += self.attention_hooks(module)
            elif slot == MLP:
                points += self.mlp_hooks(module)
            else:
                points.append(HookPoint(module, slot.where, slot.name))
        return points

    def result_hook(self, layer: nn.Module, lazy: bool = False) -> HookPoint | None:
        """`attn.hook_result` [n_heads, d_model] at the step's last position (direct logit attribution),
        from the input of the attention's output projection; None where the block records no
        `hook_attn_out` or has no output projection split by head. `lazy`: the projection's input
        row instead, `attn.hook_o_input` [n_heads, d_head], from which the reader computes
        hook_result with W_O (`result_weights`) when it is read."""
        proj = self._result_projection(layer)
        n_heads = self.config.num_attention_heads
        results = head_results(proj, n_heads) if proj is not None else None
        if proj is None or results is None:
            return None
        if lazy:
            return HookPoint(proj, "in", O_INPUT, head_inputs(n_heads))
        return HookPoint(proj, "in", "attn.hook_result", results)

    def _result_projection(self, layer: nn.Module) -> nn.Module | None:
        attn = self.attention(layer)
        proj = out_projection(attn) if attn is not None else None
        if proj is None or not any(p.name == "hook_attn_out" for p in self.block_hooks(layer)):
            return None
        return proj

    def result_weights(self) -> dict[str, torch.Tensor]:
        """`blocks.{L}.attn.W_O` [n_heads, d_head, d_model] of every layer with a result hook (views)."""
        out = {}
        for i, layer in enumerate(self.layers()):
            if self.result_hook(layer) is not None:
                proj = self._result_projection(layer)
                assert proj is not None  # a result hook reads this projection
                out[f"blocks.{i}.attn.W_O"] = w_o(proj, self.config.num_attention_heads)
        return out

    def head_hooks(self) -> list[HookPoint]:
        """Hook points outside the blocks (embeddings, final norm, logits)."""
        points = [HookPoint(self.embed(), "out", "hook_embed")]
        pos = self.pos_embed()
        if pos is not None:
            points.append(HookPoint(pos, "out", "hook_pos_embed", self.pos_transform))
        points += [
            HookPoint(self.final_norm(), "out", "ln_final.hook_normalized"),
            HookPoint(self.lm_head(), "out", "logits"),
        ]
        return points

    @staticmethod
    def pos_transform(t: torch.Tensor) -> torch.Tensor:
        return t[0] if t.dim() == 3 else t

    @property
    def attention_names(self) -> dict[str, str]:
        """Role in the attention function -> block-local recorded name."""
        names = {"v": "attn.hook_v", "scores": "attn.hook_attn_scores", "pattern": "attn.hook_pattern", "z": "attn.hook_z"}
        if self.rotary:
            names.update(q="attn.hook_rot_q", k="attn.hook_rot_k")
        else:
            names.update(q="attn.hook_q", k="attn.hook_k")
        return names

    def not_applicable(self) -> list[str]:
        """Block-local names of the vocabulary this family does not have."""
        have = expand_norm_names(p.name for layer in self.layers() for p in self.block_hooks(layer)) | set(self.attention_names.values())
        return [n for n in BLOCK_NAMES if n not in have]

    def missing_names(self) -> list[str]:
        """Names the family has but this adapter cannot find (only the generic fallback has any)."""
        return []

    # -- the unembedding used by the logit lens ------------------------------------------------
    def unembed(self, x: torch.Tensor) -> torch.Tensor:
        """[n, d_model] residual -> [n, vocab] logits, through the final norm and the LM head."""
        return self.lm_head()(self.final_norm()(x))

    def final_softcap(self) -> float | None:
        """cap of the final logit soft-capping (cap · tanh(logits / cap)), None without one."""
        return None

    def lens_facts(self) -> dict | None:
        """What tracer/lens.py needs to apply the final norm and unembedding in numpy, None when
        this model's final norm or LM head is not one it can reproduce (the lens is then computed
        while tracing)."""
        try:
            norm, head = self.final_norm(), self.lm_head()
        except AttributeError:
            return None
        eps = norm_eps(norm) if norm is not None else None
        if eps is None or not isinstance(getattr(head, "weight", None), torch.Tensor) or getattr(norm, "weight", None) is None:
            return None
        return {
            "norm": norm_kind(norm, self.norm),
            "eps": eps,
            "weight_offset": self.norm_weight_offset,
            "softcap": self.final_softcap(),
            "n_layers": len(self.layers()),
        }

    def lens_arrays(self) -> dict[str, torch.Tensor]:
        """Final norm weight (and bias) [d_model], unembedding W_U [d_model, vocab] (and b_U [vocab])."""
        norm, head = self.final_norm(), self.lm_head()
        weight = cast(torch.Tensor, norm.weight)  # torch types a module attribute as Tensor | Module
        out = {"ln_final.w": dense(weight.detach()).float(), "unembed.W_U": dense(cast(torch.Tensor, head.weight).detach()).t()}
        if getattr(norm, "bias", None) is not None:
            out["ln_final.b"] = dense(cast(torch.Tensor, norm.bias).detach()).float()
        if getattr(head, "bias", None) is not None:
            out["unembed.b_U"] = dense(cast(torch.Tensor, head.bias).detach()).float()
        out.update(self.post_norm_arrays())
        return out

    def post_norm_arrays(self) -> dict[str, torch.Tensor]:
        """`blocks.{L}.ln1_post.w` / `.b` (and ln2_post) [d_model]: the post-norms' weights, which direct
        logit attribution needs to pass a head's output through its post-norm (Gemma 2/3, OLMo 2, GLM-4)."""
        out = {}
        for i, layer in enumerate(self.layers()):
            for p in self.block_hooks(layer):
                if p.name in ("ln1_post.hook_normalized", "ln2_post.hook_normalized"):
                    prefix = f"blocks.{i}.{p.name.split('.')[0]}"
                    if isinstance(getattr(p.module, "weight", None), torch.Tensor):
                        out[prefix + ".w"] = dense(_live_weight(p.module)).detach().float()
                    if isinstance(getattr(p.module, "bias", None), torch.Tensor):
                        out[prefix + ".b"] = dense(_live_weight(p.module, "bias")).detach().float()
        return out

    # -- facts -------------------------------------------------------------------------------
    def layer_types(self) -> list[str] | None:
        """Per layer "full_attention" or "sliding_attention" where the family mixes them, else None."""
        types = getattr(self.config, "layer_types", None)
        return list(types) if types else None

    def sliding_window(self) -> int | None:
        """The window of the layers that slide, None when no layer does."""
        window = getattr(self.config, "sliding_window", None)
        types = self.layer_types()
        if not window or (types is not None and "sliding_attention" not in types):
            return None
        return int(window)

    def rotary_dim(self) -> int | None:
        """Features of each head that RoPE turns (fewer than d_head with a partial_rotary_factor)."""
        if not self.rotary:
            return None
        factor = (getattr(self.config, "rope_parameters", None) or {}).get("partial_rotary_factor") or 1.0
        return int(self.d_head() * factor)

    def facts(self) -> dict:
        c = self.config
        n_heads = c.num_attention_heads
        d_model = c.hidden_size
        return {
            "family": self.family,
            "generic_fallback": self.generic_fallback,
            "layout": asdict(self.layout),
            "n_layers": c.num_hidden_layers,
            "d_model": d_model,
            "n_heads": n_heads,
            "n_kv_heads": getattr(c, "num_key_value_heads", None) or n_heads,
            "d_head": getattr(c, "head_dim", None) or d_model // n_heads,
            "d_mlp": getattr(c, "intermediate_size", None) or 4 * d_model,
            "vocab_size": c.vocab_size,
            "n_ctx": getattr(c, "max_position_embeddings", None),
            "positional": "rotary" if self.rotary else "absolute",
            "rotary_dim": self.rotary_dim(),
            "norm": self.norm,
            "act": getattr(c, "hidden_act", None) or getattr(c, "activation_function", None),
            "gated_mlp": self.gated_mlp,
            "parallel_attn_mlp": self.parallel_attn_mlp,
            "sliding_window": self.sliding_window(),
            "layer_types": self.layer_types(),
            "n_experts": None,
            "data_flow": list(self.data_flow),
        }
