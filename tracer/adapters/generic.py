"""The generic fallback: a decoder no adapter knows still traces, with what can be found reliably.

Recorded: `hook_embed` (the input embeddings' output), every block's input `hook_resid_pre` and
output `hook_resid_post` (the largest ModuleList of layers), `ln_final.hook_normalized` when a
final norm is found by name, `logits` (the model's own output) and sampling. The logit lens is
`lm_head(final_norm(resid_post))` (without any family-specific post-processing such as soft-caps).

Attention, for any model whose attention goes through transformers' attention-function interface:
the module of each block that calls it is found from its code, its layer from its position in the
list of layers, and the traced attention function records q, k, v as the function receives them
(after whatever RoPE or q/k norm the model applies: `hook_rot_q`/`hook_rot_k` when the config has
RoPE, else `hook_q`/`hook_k`), scores, pattern and z. Blocks without such a module (linear
attention, state-space layers) are listed in the manifest's `layers_without_attention`.
Everything else is listed, once, as missing: in a warning and in the manifest's `missing_names`.
"""

from __future__ import annotations

import inspect
import warnings
import weakref
from dataclasses import asdict

from torch import nn

from ..names import BLOCK_NAMES, FAMILY_EXTRAS, FINAL_NAMES
from .base import Adapter, HookPoint, UnsupportedModel, rows
from .common import ATTENTION_SINK
from .slots import RESID_POST, RESID_PRE


class GenericFallbackWarning(UserWarning):
    """Issued once per model traced by the generic fallback; names what cannot be recorded."""


FINAL_NORM_NAMES = ("norm", "final_norm", "ln_f", "final_layernorm", "final_layer_norm", "norm_f", "ln_final")
FOUND_BLOCK_NAMES = ("hook_resid_pre", "hook_resid_post")
_INTERFACE_MARKS = ("ALL_ATTENTION_FUNCTIONS", "attention_interface")
_USES_INTERFACE: dict[type, bool] = {}
_WARNED: weakref.WeakSet = weakref.WeakSet()  # models whose fallback notice was issued


def uses_attention_interface(module: nn.Module) -> bool:
    """Whether the module's forward calls transformers' attention-function interface (read from its code)."""
    cls = type(module)
    if cls not in _USES_INTERFACE:
        try:
            source = inspect.getsource(cls.forward)
        except (OSError, TypeError):
            source = ""
        _USES_INTERFACE[cls] = any(mark in source for mark in _INTERFACE_MARKS)
    return _USES_INTERFACE[cls]


def find_attention(layer: nn.Module) -> nn.Module | None:
    """The block's module that calls the attention interface (the shallowest, first; the block itself
    when it computes attention inline), else None."""
    found = [(name.count(".") + bool(name), m) for name, m in layer.named_modules() if uses_attention_interface(m)]
    return min(found, key=lambda f: f[0])[1] if found else None


def has_rope(config) -> bool:
    """Whether the config describes rotary position embeddings (q and k reach attention rotated)."""
    return any(getattr(config, a, None) for a in ("rope_parameters", "rope_theta", "rope_scaling", "rotary_dim"))


def find_layers(model: nn.Module) -> tuple[nn.Module, nn.ModuleList]:
    """(parent, layers): the decoder blocks, a ModuleList of same-class modules.

    Preferred: a list as long as the config's layer count; then the longest; ties go to the
    shallowest (so per-layer expert lists never win over the layers that hold them).
    """
    n_layers = getattr(model.config, "num_hidden_layers", None)
    candidates = []
    for path, parent in model.named_modules():
        for name, child in parent.named_children():
            if isinstance(child, nn.ModuleList) and len(child) and len({type(m) for m in child}) == 1:
                depth = (path + "." + name).count(".")
                candidates.append((len(child) == n_layers, len(child), -depth, parent, child))
    if not candidates:
        raise UnsupportedModel(f"{type(model).__name__} has no list of decoder layers: not a decoder stepscope can trace")
    best = max(candidates, key=lambda c: c[:3])
    return best[3], best[4]


def find_final_norm(parent: nn.Module) -> nn.Module | None:
    """The final norm next to the layers, found by its conventional attribute names."""
    for name in FINAL_NORM_NAMES:
        module = getattr(parent, name, None)
        if isinstance(module, nn.Module) and any(True for _ in module.parameters()):
            return module
    return None


class GenericAdapter(Adapter):
    family = "generic"
    generic_fallback = True
    rotary = False
    norm = None
    gated_mlp = None
    slots = (RESID_PRE, RESID_POST)

    @property
    def data_flow(self) -> tuple[str, ...]:
        attention = (
            ("attention (through transformers' attention interface): scores = q·kᵀ·scale + mask; "
             "pattern = softmax(scores); z = pattern·v (q, k, v as the function receives them)",)
            if any(a is not None for a in self._attn) else ()
        )
        return (
            "generic fallback: the block internals of this architecture are not known to stepscope",
            "resid_post(L) = block_L(resid_pre(L)); resid_pre(L+1) = resid_post(L)",
            *attention,
            "logits = the model's output; logit lens = lm_head(final_norm(resid_post)) when a final norm is found",
        )

    def __init__(self, model: nn.Module):
        super().__init__(model)
        if getattr(model.config, "is_encoder_decoder", False) or not self.model.can_generate():
            raise UnsupportedModel(f"{type(model).__name__} is not a generative decoder")
        self._parent, self._layers = find_layers(model)
        self._head = self.model.get_output_embeddings()
        if self._head is None:
            raise UnsupportedModel(f"{type(model).__name__} has no output embeddings (LM head)")
        self._norm = find_final_norm(self._parent)
        self._attn = [find_attention(layer) for layer in self._layers]
        self._rotary = has_rope(model.config)
        if model not in _WARNED:
            _WARNED.add(model)  # once per model, however many adapters are made
            self._warn()

    @property
    def notice(self) -> str:
        """One line: what the fallback records and which names are missing."""
        missing = self.missing_names()
        n_attn = sum(a is not None for a in self._attn)
        attn = f", attention (q/k/v, scores, pattern, z) of {n_attn}" if n_attn else ""
        return (
            f"stepscope has no adapter for {self.config.model_type!r}: generic fallback records hook_embed, "
            f"resid_pre/resid_post of each of {len(self._layers)} blocks{attn}"
            f"{', ln_final' if self._norm is not None else ''}, logits and sampling; "
            f"missing ({len(missing)}): {', '.join(missing)}"
        )

    def _warn(self) -> None:
        warnings.warn(self.notice, GenericFallbackWarning, stacklevel=4)

    def base(self):
        return self._parent

    def embed(self):
        return self.model.get_input_embeddings()

    def layers(self):
        return list(self._layers)

    def final_norm(self):
        return self._norm if self._norm is not None else nn.Identity()

    def lm_head(self):
        return self._head

    def attention(self, layer):
        """The module that calls the attention interface in this block; None records no attention there."""
        return self._attn[self._layers_index(layer)]

    def _layers_index(self, layer) -> int:
        return next(i for i, m in enumerate(self._layers) if m is layer)

    @property
    def attention_names(self) -> dict[str, str]:
        if not any(a is not None for a in self._attn):
            return {}
        q, k = ("attn.hook_rot_q", "attn.hook_rot_k") if self._rotary else ("attn.hook_q", "attn.hook_k")
        return {"q": q, "k": k, "v": "attn.hook_v", "scores": "attn.hook_attn_scores", "pattern": "attn.hook_pattern", "z": "attn.hook_z"}

    def layers_without_attention(self) -> list[int]:
        return [i for i, a in enumerate(self._attn) if a is None]

    def _no_attention_reason(self) -> str | None:
        """Why some blocks have no attention map: the module they use instead (e.g. a linear-attention mixer)."""
        missing = self.layers_without_attention()
        if not missing:
            return None

        def kinds(layer) -> set[str]:
            return {type(m).__name__ for m in layer.children()}

        with_attn = [kinds(layer) for layer, a in zip(self._layers, self._attn) if a is not None]
        mixers = sorted(kinds(self._layers[missing[0]]) - set().union(*with_attn))
        return (
            f"no module of these blocks calls the attention interface (they use {', '.join(mixers) or 'another mixer'}: "
            "linear attention or a recurrent state, which has no attention map)"
        )

    def head_hooks(self) -> list[HookPoint]:
        points = [HookPoint(self.embed(), "out", "hook_embed")]
        if self._norm is not None:
            points.append(HookPoint(self._norm, "out", "ln_final.hook_normalized"))
        return points + [HookPoint(self.model, "out", "logits", rows, pick="logits")]

    def not_applicable(self) -> list[str]:
        return []  # unknown: what the family lacks cannot be told from outside

    def missing_names(self) -> list[str]:
        found = set(FOUND_BLOCK_NAMES) | set(self.attention_names.values())
        missing = [n for n in BLOCK_NAMES if n not in found and n not in FAMILY_EXTRAS]
        if self._norm is None:
            missing += [n for n in FINAL_NAMES if n != "logits"]
        return missing

    def facts(self) -> dict:
        c = self.config
        d_model = getattr(c, "hidden_size", None) or self.embed().weight.shape[1]
        n_heads = getattr(c, "num_attention_heads", None)
        facts = {
            "family": self.family,
            "generic_fallback": self.generic_fallback,
            "layout": asdict(self.layout),
            "n_layers": len(self._layers),
            "d_model": d_model,
            "n_heads": n_heads,
            "n_kv_heads": getattr(c, "num_key_value_heads", None) or n_heads,
            "d_head": getattr(c, "head_dim", None) or (d_model // n_heads if n_heads else None),
            "d_mlp": getattr(c, "intermediate_size", None) or getattr(c, "ffn_dim", None),
            "vocab_size": c.vocab_size,
            "n_ctx": getattr(c, "max_position_embeddings", None),
            "positional": "rotary" if self._rotary else None,
            "norm": None,
            "act": getattr(c, "hidden_act", None) or getattr(c, "activation_function", None),
            "gated_mlp": None,
            "parallel_attn_mlp": None,
            "sliding_window": self.sliding_window(),
            "layer_types": self.layer_types(),
            "n_experts": None,
            "data_flow": list(self.data_flow),
            "final_norm_found": self._norm is not None,
            "layers_without_attention": self.layers_without_attention(),
            "no_attention_reason": self._no_attention_reason(),
            "attention_sink": ATTENTION_SINK if any(getattr(a, "sinks", None) is not None for a in self._attn) else None,
            "attention_module": next((type(a).__name__ for a in self._attn if a is not None), None),
            "attention_inputs": (
                "q, k, v as the attention function receives them (after the model's RoPE and q/k norms)"
                if any(a is not None for a in self._attn) else None
            ),
        }
        return facts
