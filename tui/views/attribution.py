"""What the attribution pane reads: direct logit attribution of a step (`tracer.attribution`),
cached, the unembedding it needs, the rivals of the chosen token. The lines are drawn by
`tui.render.attribution`."""

from __future__ import annotations

from types import SimpleNamespace

from stepscope.tracer.attribution import Attribution, attribute, keep_lens_arrays, lens_loaded, read_lens_arrays
from stepscope.tracer.trace_format import TraceError

_CACHE: dict[tuple[int, int, int | None], Attribution] = {}


def cached_attribution(trace, step: int, other: int | None = None) -> Attribution:
    """attribute(trace, step, other=other), kept for the last few (trace, step, other)."""
    key = (id(trace), step, other)
    hit = _CACHE.get(key)
    if hit is None:
        if len(_CACHE) > 64:
            _CACHE.clear()
        hit = _CACHE[key] = attribute(trace, step, other=other)
    return hit


def lens_ready(trace) -> bool:
    """Whether the unembedding the attribution reads is loaded (or the trace has none: nothing to wait for)."""
    return lens_loaded(trace) or not trace.model.get("lens")


def lens_source(trace) -> SimpleNamespace:
    """What a worker thread needs to read the trace's lens file without touching the Trace."""
    return SimpleNamespace(path=getattr(trace, "root", None) or trace.path, model=dict(trace.model))


def read_lens(source) -> dict:
    """lens.safetensors of `lens_source(trace)` (slow: W_U; run it in a thread)."""
    return read_lens_arrays(source)


def install_lens(trace, arrays: dict) -> None:
    """Hand arrays read by `read_lens` to the trace (UI thread)."""
    keep_lens_arrays(trace, arrays)


def top_head(trace, step: int, layer: int, other: int | None = None) -> int | None:
    """The head of `layer` contributing most (by size) at the step, None without per-head results."""
    try:
        heads = cached_attribution(trace, step, other).heads(layer)
    except TraceError:
        return None
    return max(heads, key=lambda t: abs(t.value)).head if heads else None


def rivals(trace, step: int, n: int = 8) -> list[int]:
    """Other tokens to compare the chosen one with: the stored candidates in order, chosen excluded."""
    s = trace.steps[step]
    chosen = int(s.token["id"])
    ids = [int(i) for i in s["sample.candidate_ids"][: n + 1]] if "sample.candidate_ids" in s else []
    return [i for i in ids if i != chosen][:n]
