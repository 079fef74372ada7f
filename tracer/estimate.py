"""Bytes a step will take on disk, from the model facts, the names a step records and the name filter
(also what a recording holds in memory at once: tracer/budget.py)."""

from __future__ import annotations

import re

from .names import NameFilter, shape_doc

_DIM = re.compile(r"[A-Za-z_]+|\d+")


def _numel(doc: str, dims: dict[str, int]) -> int:
    n = 1
    for tok in _DIM.findall(doc):
        n *= int(tok) if tok.isdigit() else dims.get(tok, 1)
    return n


def step_bytes(names: list[str], facts: dict, keep: NameFilter, t: int, s: int, itemsize: int, lens_k: int = 10) -> int:
    """Estimated bytes of one step computing `t` positions against `s` keys; `names`: every name a step
    records before the filter (`LiveSession.names`)."""
    total = names_bytes(names, facts, keep, t, s, itemsize, lens_k)
    total += 2 * facts["n_layers"] * lens_k * 8 + 6 * 64 * 8  # logit lens + sampling arrays
    return total


def names_bytes(names: list[str], facts: dict, keep: NameFilter, t: int, s: int, itemsize: int, lens_k: int = 10) -> int:
    """Estimated bytes of the kept `names` alone (no lens or sampling arrays) over `t` positions and `s` keys."""
    dims = {
        "T": t,
        "S": s,
        "d_model": facts["d_model"],
        "n_heads": facts["n_heads"],
        "n_kv_heads": facts["n_kv_heads"],
        "d_head": facts["d_head"],
        "d_mlp": facts["d_mlp"],
        "vocab": facts["vocab_size"],
        "n_layers": facts["n_layers"],
        "k": lens_k,
        "N": 64,
        "n_experts": facts.get("n_experts") or 1,
        "top_k_experts": facts.get("experts_per_token") or 1,
    }
    # a norm's hook_normalized is computed by the reader from its recorded input (resid_pre, ...)
    derived = (lambda n: n.endswith(".hook_normalized")) if not keep.patterns else (lambda n: False)  # noqa: E731
    return sum(_numel(shape_doc(n), dims) * itemsize for n in names if keep(n) and not derived(n))
