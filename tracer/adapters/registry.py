"""Which adapter traces a model: the family that declared its model_type, else the generic fallback.

Importing this module imports every family's module, and each adapter class registers itself
(`base.registered_adapters`); a new family is one module here, added to the imports below.
"""

from __future__ import annotations

from importlib.metadata import version

from packaging.version import Version
from torch import nn

from . import (  # noqa: F401 (imported so that their adapters register)
    deepseek_v3,
    gemma,
    glm4,
    gpt2,
    gpt_oss,
    llama,
    mistral,
    mixtral,
    neox,
    olmo2,
    phi3,
    qwen,
    qwen3_moe,
    qwen3_next,
    smollm3,
)
from .base import Adapter, UnsupportedModel, registered_adapters
from .generic import GenericAdapter


def adapter_for(model: nn.Module) -> Adapter:
    """The family's adapter, else the generic fallback (which warns once what it cannot record).

    Raises UnsupportedModel for models that are not decoders (no list of layers, no LM head), and
    for a transformers release older than the family's modelling code.
    """
    model_type = getattr(model.config, "model_type", None)
    cls = registered_adapters().get(model_type) if model_type is not None else None
    if cls is None or model_type is None:
        return GenericAdapter(model)
    check_transformers(model_type, cls.min_transformers)
    return cls(model)


def installed_transformers() -> str:
    """The installed transformers release (its distribution metadata)."""
    return version("transformers")


def check_transformers(model_type: str, needed: str) -> None:
    """Refuse in one line a transformers release older than the adapter's modelling code."""
    installed = installed_transformers()
    if Version(installed) < Version(needed):
        raise UnsupportedModel(
            f"{model_type} needs transformers >= {needed} (installed: {installed}); "
            f"pip install -U 'transformers>={needed},<6'"
        )

