"""Bytes a step will take on disk, from the model facts and the recorded-name filter."""

from __future__ import annotations

import re

from .names import NameFilter, block_name, expand_norm_names, shape_doc

_DIM = re.compile(r"[A-Za-z_]+|\d+")


def _numel(doc: str, dims: dict[str, int]) -> int:
    n = 1
    for tok in _DIM.findall(doc):
        n *= int(tok) if tok.isdigit() else dims.get(tok, 1)
    return n


def recorded_names(adapter) -> list[str]:
    """Every name the adapter records for one step (before any filter)."""
    names = sorted(expand_norm_names(p.name for p in adapter.head_hooks()))  # a norm records scale, normalized, out
    first = adapter.layers()[0]
    local = sorted(expand_norm_names(p.name for p in adapter.block_hooks(first))) + list(adapter.attention_names.values())
    for layer in range(len(adapter.layers())):
        names += [block_name(layer, n) for n in local]
    return names


def step_bytes(adapter, facts: dict, keep: NameFilter, t: int, s: int, itemsize: int, lens_k: int = 10) -> int:
    """Estimated bytes of one step computing `t` positions against `s` keys."""
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
    total = sum(_numel(shape_doc(n), dims) * itemsize for n in recorded_names(adapter) if keep(n) and not derived(n))
    total += 2 * facts["n_layers"] * lens_k * 8 + 6 * 64 * 8  # logit lens + sampling arrays
    return total
