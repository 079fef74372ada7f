"""From a trace to the analysis tools people use: TransformerLens-shaped caches, decoded candidates.

`tl_cache(trace, steps)` joins a range of steps into one dict keyed by TransformerLens names with
TransformerLens's layout: a leading batch axis of 1, positions concatenated (`[1, pos, ...]`), and
attention maps as `[1, n_heads, query_pos, key_pos]` with keys from position 0, so a trace's
steps 0..n read like `model.run_with_cache(tokens)` over the same sequence, as numpy arrays (the
reading path never imports torch; `stepscope.tl_cache(..., torch=True)` gives torch tensors).
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

from .names import shape_doc, split_block_name
from .tokenizer_file import trace_tokenizer

_MAPS = ("attn.hook_attn_scores", "attn.hook_pattern")  # [n_heads, T, S]: keys padded to the last S
_PAD = {"attn.hook_attn_scores": -np.inf, "attn.hook_pattern": 0.0}  # masked future keys, as TransformerLens


def _step_range(trace, steps) -> list:
    n = len(trace.steps)
    if steps is None:
        indices: Iterable[int] = range(n)
    elif isinstance(steps, int):
        indices = range(steps, steps + 1) if steps >= 0 else range(n + steps, n + steps + 1)
    elif isinstance(steps, slice):
        indices = range(*steps.indices(n))
    else:
        indices = list(steps)
    indices = list(indices)
    if not indices or any(not 0 <= i < n for i in indices):
        raise IndexError(f"steps {steps!r} are not in this trace's {n} steps")
    if any(b != a + 1 for a, b in zip(indices, indices[1:])):
        raise ValueError("tl_cache needs consecutive steps (their positions are joined)")
    return [trace.steps[i] for i in indices]


def positional_names(step) -> list[str]:
    """The step's names with a position axis (`[T, ...]` and attention maps), not the sampler's or the lens's."""
    return [n for n in step.names if shape_doc(n).startswith("[T,") or (split_block_name(n) or (0, ""))[1] in _MAPS]


def _read(step, name: str) -> np.ndarray:
    """The full array, with rows a recording budget left out recomputed by the reader."""
    omitted = getattr(step, "omitted", None) or {}
    parts = split_block_name(name)
    if name in omitted and parts and parts[1] in _MAPS:
        start, end = step.positions
        kind = "pattern" if parts[1].endswith("pattern") else "scores"
        return step.attention_rows(parts[0], kind, 0, end - start)
    return step[name]


def _join(name: str, arrays: list[np.ndarray]) -> np.ndarray:
    parts = split_block_name(name)
    if parts and parts[1] in _MAPS:  # [n_heads, T, S] per step -> [n_heads, sum T, max S]
        width = max(a.shape[-1] for a in arrays)
        dtype = np.result_type(arrays[0].dtype, np.float32) if parts[1].endswith("scores") else arrays[0].dtype
        padded = []
        for a in arrays:
            full = np.full((*a.shape[:-1], width), _PAD[parts[1]], dtype=dtype)  # [n_heads, T, width]
            full[..., : a.shape[-1]] = a
            padded.append(full)
        return np.concatenate(padded, axis=1)
    return np.concatenate(arrays, axis=0)  # [sum T, ...]


def tl_cache(trace, steps=None, names=None) -> dict:
    """Steps (None = all, an index, a slice or consecutive indices) as {TransformerLens name: [1, ...]}.

    `names`: an iterable of names to keep (default every positional name). Rows are the positions
    `positions(trace, steps)`; attention maps' key axis starts at position 0.
    """
    chosen = _step_range(trace, steps)
    wanted = positional_names(chosen[0]) if names is None else list(names)
    out = {}
    for name in wanted:
        missing = [s.index for s in chosen if name not in s]
        if missing:
            raise KeyError(f"{name!r} is not recorded in step {missing[0]}")
        joined = _join(name, [_read(s, name) for s in chosen])[None]  # batch axis of 1
        out[name] = joined
    return out


def positions(trace, steps=None) -> tuple[int, int]:
    """[start, end) token positions the rows of `tl_cache(trace, steps)` stand for."""
    chosen = _step_range(trace, steps)
    return chosen[0].positions[0], chosen[-1].positions[1]


def token_ids(trace, steps=None) -> np.ndarray:
    """[1, pos] the input ids of those rows (what TransformerLens's `run_with_cache` would be given)."""
    start, end = positions(trace, steps)
    return np.array([[t["id"] for t in trace.tokens[start:end]]], dtype=np.int64)


# -- decoding ids without transformers ---------------------------------------------------------
def decoder(trace):
    """`decode(ids) -> str` from the trace's tokenizer.json (the `tokenizers` library), else the
    token texts the manifest holds (ids outside the sequence then decode as `<id N>`)."""
    tok = trace_tokenizer(trace.path)
    if tok is not None:
        return lambda ids: tok.decode([int(i) for i in ids], skip_special_tokens=False)
    known = {t["id"]: t["text"] for t in trace.tokens}
    return lambda ids: "".join(known.get(int(i), f"<id {int(i)}>") for i in ids)


def candidates(trace, step, n: int = 10, decode=None) -> list[tuple[int, str, float]]:
    """The step's first `n` sampling candidates: (id, text, final probability)."""
    decode = decode or decoder(trace)
    ids, probs = step["sample.candidate_ids"][:n], step["sample.candidate_probs"][:n]
    return [(int(i), decode([i]), float(p)) for i, p in zip(ids, probs)]


def lens(trace, step, decode=None) -> list[list[tuple[str, float]]]:
    """The logit lens at the predicting position: per layer, the top tokens and their probabilities."""
    decode = decode or decoder(trace)
    ids, probs = step["logit_lens.ids"], step["logit_lens.probs"]  # [n_layers, k]
    return [[(decode([i]), float(p)) for i, p in zip(row_ids, row_probs)] for row_ids, row_probs in zip(ids, probs)]
