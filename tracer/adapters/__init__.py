"""Per-family knowledge, one small adapter each. `adapter_for(model)` picks one; architectures
without an adapter get the generic fallback (embeddings, block inputs/outputs, logits)."""

from __future__ import annotations

from .base import Adapter, HookPoint, UnsupportedModel
from .deepseek_v3 import DeepseekV3Adapter
from .gemma import GemmaAdapter
from .glm4 import Glm4Adapter
from .gpt_oss import GptOssAdapter
from .generic import GenericAdapter, GenericFallbackWarning
from .gpt2 import GPT2Adapter
from .llama import LlamaAdapter
from .mistral import MistralAdapter
from .mixtral import MixtralAdapter
from .neox import GPTNeoXAdapter
from .olmo2 import Olmo2Adapter
from .phi3 import Phi3Adapter
from .qwen import Qwen2Adapter, Qwen3Adapter
from .qwen3_moe import Qwen3MoeAdapter
from .qwen3_next import Qwen3NextAdapter
from .smollm3 import SmolLM3Adapter

ADAPTERS: list[type[Adapter]] = [
    LlamaAdapter,
    GPT2Adapter,
    MistralAdapter,
    Qwen2Adapter,
    Qwen3Adapter,
    Phi3Adapter,
    GemmaAdapter,
    GPTNeoXAdapter,
    MixtralAdapter,
    Qwen3MoeAdapter,
    Olmo2Adapter,
    SmolLM3Adapter,
    Glm4Adapter,
    GptOssAdapter,
    DeepseekV3Adapter,
    Qwen3NextAdapter,
]


def adapter_for(model) -> Adapter:
    """The family's adapter, else the generic fallback (which warns once what it cannot record).

    Raises UnsupportedModel for models that are not decoders (no list of layers, no LM head).
    """
    model_type = getattr(model.config, "model_type", None)
    for cls in ADAPTERS:
        if model_type in cls.model_types:
            _check_transformers(model_type, cls.min_transformers)
            return cls(model)
    return GenericAdapter(model)


def installed_transformers() -> str:
    """The installed transformers release (its distribution metadata)."""
    from importlib.metadata import version

    return version("transformers")


def _check_transformers(model_type: str, needed: str) -> None:
    """Refuse in one line a transformers release older than the adapter's modelling code."""
    from packaging.version import Version

    installed = installed_transformers()
    if Version(installed) < Version(needed):
        raise UnsupportedModel(
            f"{model_type} needs transformers >= {needed} (installed: {installed}); "
            f"pip install -U 'transformers>={needed},<6'"
        )


__all__ = [
    "ADAPTERS",
    "Adapter",
    "GenericAdapter",
    "GenericFallbackWarning",
    "HookPoint",
    "UnsupportedModel",
    "adapter_for",
]
