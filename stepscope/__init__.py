"""stepscope's Python API: record a `model.generate(...)` call, open a trace, read it with TransformerLens names.

    import stepscope
    with stepscope.record(model, tokenizer, out="traces/mine") as rec:
        model.generate(input_ids, max_new_tokens=20)
    trace = stepscope.load_trace("traces/mine")
    cache = stepscope.tl_cache(trace, slice(0, 5))

Importing this module does not import torch; `record` imports it when called.
"""

from stepscope.tracer import Step, Trace, TraceError, __version__, load_trace
from stepscope.tracer.export import candidates, decoder, lens, positions, tl_cache, token_ids


def record(model, tokenizer, out=None, **kwargs):
    """Context manager: trace the `model.generate(...)` call made inside it (see `tracer.record.record`)."""
    from stepscope.tracer.record import record as _record

    return _record(model, tokenizer, out=out, **kwargs)


def record_generate(model, tokenizer, *args, **kwargs):
    """Function form: `output, trace = record_generate(model, tokenizer, input_ids, out=..., max_new_tokens=...)`."""
    from stepscope.tracer.record import record_generate as _record_generate

    return _record_generate(model, tokenizer, *args, **kwargs)


__all__ = [
    "Step", "Trace", "TraceError", "__version__", "candidates", "decoder", "lens", "load_trace", "positions",
    "record", "record_generate", "tl_cache", "token_ids",
]
