"""The private APIs of torch and transformers that stepscope relies on, all in this one module.

Each has no public equivalent; a release that renames one breaks here, in one place, and the
structure tests allow a private attribute of another library's object nowhere else.

    foreach_copy(dst, src)        torch._foreach_copy_: many copies in one call (the fused optimizers' path)
    flatten_dense_tensors(ts)     torch._utils._flatten_dense_tensors: what DDP buckets with, one C++ call
    attn_implementation(model)    model.config._attn_implementation: the attention a model runs with
    GENERATION_HOOKS              the names of generate()'s helpers stepscope.record wraps on one model
    generation_hooks(model)       those helpers of a model, (logits processors, stopping criteria)
    default_store()               torch.distributed's key-value store of the default process group
"""

from __future__ import annotations

import torch
from torch._utils import _flatten_dense_tensors as flatten_dense_tensors
from torch.distributed import Store
from torch.distributed.distributed_c10d import _get_default_store

foreach_copy = torch._foreach_copy_
GENERATION_HOOKS = ("_get_logits_processor", "_get_stopping_criteria")


def attn_implementation(model) -> str | None:
    """The attention implementation `model` runs with (transformers keeps it on the config, privately)."""
    return model.config._attn_implementation


def generation_hooks(model) -> tuple:
    """`generate()`'s helpers that build the logits processors and the stopping criteria of `model`."""
    return tuple(getattr(model, name) for name in GENERATION_HOOKS)


def default_store() -> Store:
    """The key-value store the default process group was made with (under torchrun: its rendezvous
    store, keyed for this attempt): what the ranks share besides collectives."""
    return _get_default_store()


__all__ = ["GENERATION_HOOKS", "attn_implementation", "default_store", "flatten_dense_tensors", "foreach_copy", "generation_hooks"]
