"""Per-family knowledge, one small adapter each. `adapter_for(model)` picks one."""

from __future__ import annotations

from .base import Adapter, HookPoint
from .gpt2 import GPT2Adapter
from .llama import LlamaAdapter

ADAPTERS: list[type[Adapter]] = [LlamaAdapter, GPT2Adapter]


class UnsupportedModel(ValueError):
    """No adapter knows this architecture."""


def adapter_for(model) -> Adapter:
    model_type = getattr(model.config, "model_type", None)
    for cls in ADAPTERS:
        if model_type in cls.model_types:
            return cls(model)
    known = ", ".join(sorted(t for cls in ADAPTERS for t in cls.model_types))
    raise UnsupportedModel(f"unsupported architecture {model_type!r} (supported: {known})")


__all__ = ["ADAPTERS", "Adapter", "HookPoint", "UnsupportedModel", "adapter_for"]
