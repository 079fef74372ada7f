"""The generic fallback: a decoder no adapter knows still traces, with what can be found reliably.

Recorded: `hook_embed` (the input embeddings' output), every block's input `hook_resid_pre` and
output `hook_resid_post` (the largest ModuleList of layers), `ln_final.hook_normalized` when a
final norm is found by name, `logits` (the model's own output) and sampling. The logit lens is
`lm_head(final_norm(resid_post))` (without any family-specific post-processing such as soft-caps).
Everything else is listed, once, as missing: in a warning and in the manifest's `missing_names`.
"""

from __future__ import annotations

import warnings

from torch import nn

from ..names import BLOCK_NAMES, FINAL_NAMES
from .base import Adapter, HookPoint, UnsupportedModel, rows

class GenericFallbackWarning(UserWarning):
    """Issued once per model traced by the generic fallback; names what cannot be recorded."""


FINAL_NORM_NAMES = ("norm", "final_norm", "ln_f", "final_layernorm", "final_layer_norm", "norm_f", "ln_final")
FOUND_BLOCK_NAMES = ("hook_resid_pre", "hook_resid_post")


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
    rotary = False
    norm = None
    gated_mlp = None
    data_flow = (
        "generic fallback: the block internals of this architecture are not known to stepscope",
        "resid_post(L) = block_L(resid_pre(L)); resid_pre(L+1) = resid_post(L)",
        "logits = the model's output; logit lens = lm_head(final_norm(resid_post)) when a final norm is found",
    )

    def __init__(self, model: nn.Module):
        super().__init__(model)
        if getattr(model.config, "is_encoder_decoder", False) or not model.can_generate():
            raise UnsupportedModel(f"{type(model).__name__} is not a generative decoder")
        self._parent, self._layers = find_layers(model)
        self._head = model.get_output_embeddings()
        if self._head is None:
            raise UnsupportedModel(f"{type(model).__name__} has no output embeddings (LM head)")
        self._norm = find_final_norm(self._parent)
        if not getattr(model, "_stepscope_generic_warned", False):
            model._stepscope_generic_warned = True  # once per model, however many adapters are made
            self._warn()

    @property
    def notice(self) -> str:
        """One line: what the fallback records and which names are missing."""
        missing = self.missing_names()
        return (
            f"stepscope has no adapter for {self.config.model_type!r}: generic fallback records hook_embed, "
            f"resid_pre/resid_post of each of {len(self._layers)} blocks"
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
        return None  # not registered: the traced attention function records nothing here

    @property
    def attention_names(self) -> dict[str, str]:
        return {}

    def block_hooks(self, layer) -> list[HookPoint]:
        return [HookPoint(layer, "in", "hook_resid_pre"), HookPoint(layer, "out", "hook_resid_post")]

    def head_hooks(self) -> list[HookPoint]:
        points = [HookPoint(self.embed(), "out", "hook_embed")]
        if self._norm is not None:
            points.append(HookPoint(self._norm, "out", "ln_final.hook_normalized"))
        return points + [HookPoint(self.model, "out", "logits", rows, pick="logits")]

    def not_applicable(self) -> list[str]:
        return []  # unknown: what the family lacks cannot be told from outside

    def missing_names(self) -> list[str]:
        missing = [n for n in BLOCK_NAMES if n not in FOUND_BLOCK_NAMES]
        if self._norm is None:
            missing += [n for n in FINAL_NAMES if n != "logits"]
        return missing

    def facts(self) -> dict:
        c = self.config
        d_model = getattr(c, "hidden_size", None) or self.embed().weight.shape[1]
        n_heads = getattr(c, "num_attention_heads", None)
        facts = {
            "family": "generic",
            "n_layers": len(self._layers),
            "d_model": d_model,
            "n_heads": n_heads,
            "n_kv_heads": getattr(c, "num_key_value_heads", None) or n_heads,
            "d_head": getattr(c, "head_dim", None) or (d_model // n_heads if n_heads else None),
            "d_mlp": getattr(c, "intermediate_size", None) or getattr(c, "ffn_dim", None),
            "vocab_size": c.vocab_size,
            "n_ctx": getattr(c, "max_position_embeddings", None),
            "positional": None,
            "norm": None,
            "act": getattr(c, "hidden_act", None) or getattr(c, "activation_function", None),
            "gated_mlp": None,
            "parallel_attn_mlp": None,
            "sliding_window": self.sliding_window(),
            "layer_types": self.layer_types(),
            "n_experts": None,
            "data_flow": list(self.data_flow),
            "final_norm_found": self._norm is not None,
        }
        return facts
