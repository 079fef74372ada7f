"""A small bounded cache of per-step computations, keyed by the step file (never by step index alone)."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Hashable
from typing import TypeVar

T = TypeVar("T")

_MAX_ENTRIES = 4096
_CACHE: OrderedDict[tuple, object] = OrderedDict()


def step_key(step) -> tuple:
    """Identity of a step's data: its file path and size (a rewritten trace gets new keys)."""
    return (step.path, step.nbytes)


def cached(step, key: Hashable, compute: Callable[[], T]) -> T:
    """`compute()` once per (step file, key); least recently used entries are dropped."""
    full = (*step_key(step), key)
    try:
        value = _CACHE[full]
        _CACHE.move_to_end(full)
        return value  # type: ignore[return-value]
    except KeyError:
        pass
    value = compute()
    _CACHE[full] = value
    if len(_CACHE) > _MAX_ENTRIES:
        _CACHE.popitem(last=False)
    return value


def clear() -> None:
    _CACHE.clear()
