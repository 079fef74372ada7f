"""`stepscope.record`: trace a user's own `model.generate(...)` call into a normal trace.

    with stepscope.record(model, tokenizer, out="traces/mine") as rec:
        output = model.generate(input_ids, max_new_tokens=20, do_sample=True, logits_processor=[...])
    trace = rec.trace

`generate` keeps driving: its cache, its logits processors and warpers, its stopping criteria
and its sampling. stepscope records each forward it makes (the same hooks and traced attention
as a live session) and, after each token, writes the step with a sampler record of what the
user's processors produced: the raw logits, the kept count after every processor in order, the
final distribution `generate` drew from (or took the argmax of) and the token it chose.
"""

from __future__ import annotations

import contextlib
import time

import numpy as np
import torch
from transformers import LogitsProcessorList, StoppingCriteria

from .internals import GENERATION_HOOKS, generation_hooks
from .model_info import eos_ids
from .reader import load_trace
from .sampler import MAX_CANDIDATES, MIN_CANDIDATES, entropy
from .session import GenerationSettings, LiveSession

_SETTINGS = ("do_sample", "temperature", "top_k", "top_p", "min_p")


class RecordError(ValueError):
    """The generate call cannot be traced (batch > 1, beam search, no input ids); one line."""


def sampling_record(raw: torch.Tensor, final: torch.Tensor, chosen: int, stages: list[dict], greedy: bool, knobs: dict):
    """raw logits [vocab], processed scores [vocab] -> (JSON record, candidate arrays), the sampler's layout."""
    raw = raw.detach().float().cpu()  # [vocab]
    final = final.detach().float().cpu()  # [vocab]
    vocab = raw.shape[0]
    raw_probs = torch.softmax(raw, -1)  # [vocab]
    probs = torch.softmax(final, -1) if torch.isfinite(final).any() else torch.zeros_like(final)  # [vocab]
    kept = int((probs > 0).sum())
    order = torch.argsort(final, descending=True, stable=True)  # [vocab] by processed score
    n_store = min(max(kept, MIN_CANDIDATES), vocab, MAX_CANDIDATES)
    ids = order[:n_store]  # [N]
    arrays = {
        "sample.candidate_ids": ids.numpy().astype(np.int64),
        "sample.candidate_logits": raw[ids].numpy(),
        "sample.candidate_raw_probs": raw_probs[ids].numpy(),
        "sample.candidate_temp_probs": probs[ids].numpy(),  # generate's processors are one stage here
        "sample.candidate_probs": probs[ids].numpy(),
        "sample.candidate_cumulative": torch.cumsum(probs[ids].double(), 0).float().numpy(),
    }
    top1 = int(torch.argmax(raw).item())
    record = {
        "greedy": greedy,
        "temperature": float(knobs["temperature"]),
        "top_k": int(knobs["top_k"]),
        "top_p": float(knobs["top_p"]),
        "min_p": float(knobs["min_p"]),
        "chosen_id": chosen,
        "chosen_rank": int((raw > raw[chosen]).sum()),
        "chosen_prob": float(probs[chosen]),
        "chosen_raw_prob": float(raw_probs[chosen]),
        "chosen_temp_prob": float(probs[chosen]),
        "top1_id": top1,
        "top1_prob": float(raw_probs[top1]),
        "entropy": entropy(probs),
        "raw_entropy": entropy(raw_probs),
        "nucleus_size": kept,
        "nucleus_mass": min(1.0, float(probs[probs > 0].double().sum())),  # float32 rounding over a large vocabulary
        "stages": [{"name": "raw", "kept": vocab}, *stages],
        "source": "generate",  # the user's own generate call: stages are its processors, in order
    }
    return record, arrays


def _knobs(model, kwargs: dict) -> dict:
    """The sampling settings `generate` will use (its generation config, overridden by kwargs)."""
    config = kwargs.get("generation_config") or model.generation_config
    values = {k: kwargs.get(k, getattr(config, k, None)) for k in (*_SETTINGS, "max_new_tokens", "max_length", "num_beams", "use_cache")}
    return {
        "do_sample": bool(values["do_sample"]),
        "temperature": float(values["temperature"] if values["temperature"] else 1.0),
        "top_k": int(values["top_k"] or 0),
        "top_p": float(values["top_p"] if values["top_p"] is not None else 1.0),
        "min_p": float(values["min_p"] or 0.0),
        "max_new_tokens": values["max_new_tokens"],
        "max_length": values["max_length"],
        "num_beams": int(values["num_beams"] or 1),
        "use_cache": values["use_cache"] is not False,
    }


class _Stages:
    """Wraps generate's LogitsProcessorList: runs it processor by processor, noting each one's kept count."""

    def __init__(self, processors):
        self.processors = processors
        self.stages: list[dict] = []
        self.final: torch.Tensor | None = None

    def __call__(self, input_ids, scores, **kwargs):
        self.stages = []
        for p in self.processors:
            scores = LogitsProcessorList([p])(input_ids, scores, **kwargs)  # its own argument rules
            self.stages.append({"name": type(p).__name__[:64], "kept": int(torch.isfinite(scores[0]).sum())})
        self.final = scores[0].detach().clone()  # [vocab]
        return scores

    def __iter__(self):
        return iter(self.processors)

    def __len__(self):
        return len(self.processors)


class _WriteStep(StoppingCriteria):
    """Appended to generate's stopping criteria: `on_token(input_ids)` once each token is chosen; never stops."""

    def __init__(self, on_token):
        self.on_token = on_token

    def __call__(self, input_ids, scores, **_):
        self.on_token(input_ids)
        return torch.zeros(input_ids.shape[0], dtype=torch.bool, device=input_ids.device)


class Recording:
    """What `record(...)` yields: `trace` (a `tracer.Trace`) and `path` once a generate call has run."""

    def __init__(self, model, tokenizer, out, session_kwargs: dict):
        self.model, self.tokenizer, self.out = model, tokenizer, out
        self.session_kwargs = session_kwargs
        self.trace = None
        self.path: str | None = None
        self.output = None

    def generate(self, original, *args, **kwargs):
        """`model.generate` while recording: one traced generation per `record` block."""
        if self.trace is not None:
            raise RecordError("one generate call per stepscope.record block (open another block for the next trace)")
        ids = kwargs.get("input_ids", kwargs.get("inputs", args[0] if args else None))
        if ids is None or not isinstance(ids, torch.Tensor):
            raise RecordError("stepscope.record needs input ids (a tensor) passed to generate")
        if ids.dim() != 2 or ids.shape[0] != 1:
            raise RecordError(f"stepscope.record traces one sequence (batch of 1); got input ids of shape {tuple(ids.shape)}")
        mask = kwargs.get("attention_mask")
        if mask is not None and not bool(mask.all()):
            raise RecordError("stepscope.record traces unpadded input (the attention mask must be all ones)")
        knobs = _knobs(self.model, kwargs)
        if knobs["num_beams"] > 1:
            raise RecordError("stepscope.record traces greedy or sampled decoding, not beam search")
        if kwargs.get("assistant_model") is not None or kwargs.get("prompt_lookup_num_tokens"):
            raise RecordError("stepscope.record traces one forward per token, not assisted or speculative decoding")
        if not knobs["use_cache"]:
            raise RecordError("stepscope.record needs the KV cache (use_cache=True, the default): steps are one new token each")
        max_new = knobs["max_new_tokens"] or max(1, (knobs["max_length"] or 20) - ids.shape[1])
        session = self._open(ids[0].tolist(), knobs, max_new)
        try:
            self.output = self._run(session, original, knobs, args, kwargs)
        except BaseException as exc:
            session.close("interrupted" if isinstance(exc, KeyboardInterrupt) else "error")
            raise
        generated = self.output if isinstance(self.output, torch.Tensor) else self.output.sequences
        new = generated[0, ids.shape[1] :].tolist()
        eos = set(eos_ids(self.model, self.tokenizer))
        session.finished = True
        session.stop_reason = "eos" if new and new[-1] in eos else ("max_new_tokens" if len(new) >= max_new else "stopping_criteria")
        session.close()
        self.path = session.path
        self.trace = load_trace(session.path)
        return self.output

    def _open(self, prompt_ids: list[int], knobs: dict, max_new: int):
        settings = GenerationSettings(
            **{k: knobs[k] for k in _SETTINGS}, max_new_tokens=max_new, chat=False, stop_at_eos=False,
            logit_lens=self.session_kwargs.pop("logit_lens", True),
        )
        if not settings.do_sample:  # greedy: the temperature is not used; keep the record's settings valid
            settings.temperature = 1.0
        return LiveSession(self.model, self.tokenizer, settings=settings, out=self.out, prompt_ids=prompt_ids, **self.session_kwargs)

    def _run(self, session, original, knobs, args, kwargs):
        model = self.model
        pending: list = []  # (arrays, raw logits [vocab], width, t0) of the forward awaiting its token
        stages_box: list[_Stages] = []
        forward = model.forward

        def traced_forward(*f_args, **f_kwargs):
            t0 = time.perf_counter()
            ids = f_kwargs.get("input_ids", f_args[0] if f_args else None)
            width = int(ids.shape[1])
            if session.steps_started and width != 1:  # a decode forward over more than the new token
                raise RecordError(f"generate ran a forward over {width} positions after the prefill; stepscope.record traces one new token per step")
            out, arrays = session.capture(lambda: forward(*f_args, **f_kwargs))
            pending[:] = [(arrays, out.logits[0, -1].detach().float().clone(), width, t0)]
            return out

        get_processors, get_criteria = generation_hooks(model)

        def processors(*p_args, **p_kwargs):
            staged = _Stages(get_processors(*p_args, **p_kwargs))
            stages_box[:] = [staged]
            return staged

        def write_step(input_ids):
            arrays, raw, width, t0 = pending.pop()
            staged = stages_box[0]
            chosen = int(input_ids[0, -1])
            final = staged.final if staged.final is not None else raw
            record, sample_arrays = sampling_record(raw, final, chosen, staged.stages, not knobs["do_sample"], knobs)
            arrays.update(sample_arrays)
            session.commit(arrays, chosen, record, width, time.perf_counter() - t0)

        def criteria(*c_args, **c_kwargs):
            found = get_criteria(*c_args, **c_kwargs)
            found.append(_WriteStep(write_step))
            return found

        patches = {"forward": traced_forward, **dict(zip(GENERATION_HOOKS, (processors, criteria)))}
        saved = {k: model.__dict__[k] for k in patches if k in model.__dict__}
        model.__dict__.update(patches)
        try:
            return original(*args, **kwargs)
        finally:
            for k in patches:
                del model.__dict__[k]
            model.__dict__.update(saved)


@contextlib.contextmanager
def record(model, tokenizer, out: str | None = None, names: list[str] | None = None, store_dtype: str | None = None,
           logit_lens: bool = True, name: str | None = None, budget: int | str | None = None):
    """Trace the `model.generate(...)` call made inside the block into `out` (a temporary directory when None).

    `names`: name patterns to record (default every name); `store_dtype`: "float32" / "float16" / "bfloat16";
    `budget`: the disk budget, bytes or a size like "8G" (default 8G), applied as by `stepscope trace`
    (tracer/budget.py): a generate call whose trace would not fit raises BudgetError before it runs.
    Yields a `Recording`; after the block `recording.trace` is the trace (`tracer.Trace`).
    """
    kwargs = {"record": names, "store_dtype": store_dtype, "logit_lens": logit_lens, "name": name, "budget": budget}
    recording = Recording(model, tokenizer, out, kwargs)
    original = model.generate
    had_own = "generate" in model.__dict__

    def generate(*args, **gen_kwargs):
        return recording.generate(original, *args, **gen_kwargs)

    model.generate = generate
    try:
        yield recording
    finally:
        if had_own:
            model.generate = original
        else:
            del model.__dict__["generate"]


def record_generate(model, tokenizer, *args, out: str | None = None, names: list[str] | None = None,
                    budget: int | str | None = None, **generate_kwargs):
    """Function form: `output, trace = record_generate(model, tokenizer, input_ids, max_new_tokens=8, ...)`."""
    with record(model, tokenizer, out=out, names=names, budget=budget) as rec:
        output = model.generate(*args, **generate_kwargs)
    return output, rec.trace


__all__ = ["RecordError", "Recording", "record", "record_generate", "sampling_record"]
