"""A live tracing session: a loaded model that has computed step k and computes step k+1 on request.

Step 0 is the prefill over the prompt; step i >= 1 is the forward over generated token i with
the KV cache: the same computation `model.generate` does. Every step is recorded, sampled and
written to the session's trace directory before `step()` returns it.
"""

from __future__ import annotations

import datetime as _dt
import inspect
import os
import platform
import shutil
import time
from dataclasses import asdict, dataclass, replace
from typing import cast

import numpy as np
import torch
import transformers
from transformers import DynamicCache

from . import __version__
from .adapters.registry import adapter_for
from .attention import IMPLEMENTATION
from .attention import register as register_attention
from .budget import LOGIT_BLOCK_BYTES, BudgetError, Plan, budget_bytes, memory_budget_bytes, recording_plan
from .distributed import TensorParallel
from .distributed import init as init_distributed
from .inert import TEXT_LIMIT, inert, inert_value
from .internals import attn_implementation
from .lens import RESID_ROWS, LogitLens, stored_layout
from .loading import load_model
from .model_info import chat_default, eos_ids, model_facts, tokenizer_facts
from .names import NameFilter, block_name, expand_norm_names
from .reader import Step, Trace
from .recorder import Recorder
from .sampler import Sampler, SamplerSettings
from .scratch import LIVE_DIR_PREFIX, make_live_dir
from .staging import SLOTS, HostStager, host_array
from .step_arrays import StepArrays
from .trace_format import BRANCHES_DIR, LENS_FILE, SCHEMA, SCHEMA_VERSION, TEMP_PREFIX, TOKENIZER_FILE, TraceWriteError
from .writer import StepStream, TraceWriter, copy_trace, nonfinite_names

DEFAULT_PROMPT = "The capital of France is"


class PromptError(ValueError):
    """The prompt cannot be traced (empty, or longer than the model's context)."""


@dataclass
class GenerationSettings(SamplerSettings):
    max_new_tokens: int = 16
    chat: bool | None = None  # None: on for instruct/chat models that have a chat template
    logit_lens_k: int = 10
    logit_lens: bool = True  # False: no logit lens at all
    lens_mode: str = "auto"  # "lazy": the reader computes it from resid_post; "eager": stored per step; auto: eager on CUDA
    stop_at_eos: bool = True  # False: always generate max_new_tokens (benchmarks)

    def validate(self) -> None:
        super().validate()
        if self.max_new_tokens < 1:
            raise ValueError("max-new-tokens must be >= 1")
        if self.logit_lens_k < 1:
            raise ValueError("logit-lens k must be >= 1")
        if self.lens_mode not in ("auto", "lazy", "eager"):
            raise ValueError("lens mode must be auto, lazy or eager")


def wants_chat(tokenizer, chat: bool | None, model=None) -> bool:
    """`chat` when given (and a template exists), else what the tokenizer says (`chat_default`)."""
    if chat is not None:
        return chat and bool(getattr(tokenizer, "chat_template", None))
    return chat_default(tokenizer, model)


def encode_prompt(tokenizer, prompt: str, chat: bool) -> list[int]:
    if chat:
        ids = tokenizer.apply_chat_template(
            [{"role": "user", "content": prompt}], add_generation_prompt=True, tokenize=True
        )
        if isinstance(ids, dict) or hasattr(ids, "input_ids"):
            ids = ids["input_ids"]
        return [int(i) for i in ids]
    return [int(i) for i in tokenizer(prompt, add_special_tokens=True)["input_ids"]]


def resolve_store_dtype(model_dtype: torch.dtype, store: str | None) -> torch.dtype:
    """`store` ("float32", "float16", "bfloat16"); auto: float16 models store float16, float32 and
    bfloat16 models float32 (a bfloat16 model computes its norms' scales in float32: bfloat16
    storage rounds those, so it is asked for explicitly)."""
    if store in (None, "auto"):
        return torch.float16 if model_dtype == torch.float16 else torch.float32
    return {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}[store]


def recorded_names(adapter) -> list[str]:
    """Every name the adapter records for one step (before any filter)."""
    names = sorted(expand_norm_names(p.name for p in adapter.head_hooks()))  # a norm records scale, normalized, out
    first = adapter.layers()[0]
    local = sorted(expand_norm_names(p.name for p in adapter.block_hooks(first))) + list(adapter.attention_names.values())
    for layer in range(len(adapter.layers())):
        names += [block_name(layer, n) for n in local]
    return names


def cache_kwarg(model) -> str:
    """The forward's KV-cache argument: `cache` in current transformers, `past_key_values` before."""
    try:
        params = inspect.signature(model.forward).parameters
    except (TypeError, ValueError):
        return "past_key_values"
    return "cache" if "cache" in params else "past_key_values"


def make_parents(out: str) -> None:
    """Create the missing parent directories of an output directory (like `mkdir -p`); what cannot
    be created is left for the writer to refuse in one line."""
    parent = os.path.dirname(os.path.abspath(out))
    if not os.path.isdir(parent):
        try:
            os.makedirs(parent, exist_ok=True)
        except OSError:
            pass


class _Clock:
    """Adds the seconds since the previous call to `parts[name]` (does nothing without a dict)."""

    def __init__(self, parts: dict | None):
        self.parts, self.last = parts, time.perf_counter()

    def __call__(self, name: str) -> None:
        if self.parts is not None:
            now = time.perf_counter()
            self.parts[name] = self.parts.get(name, 0.0) + now - self.last
            self.last = now



class LiveSession:
    """Holds a loaded model and its KV cache; `step()` computes, records and writes the next step.

    Recording policy, the same for every caller (`stepscope trace`, `run`, `serve`, `stepscope.record`):
    the trace goes to `out` or a fresh temporary directory, and must fit `budget` (tracer/budget.py;
    None: DEFAULT_BUDGET): beyond it the prefill's attention maps keep their last rows, and a trace
    that still does not fit raises BudgetError before anything is written. `plan` is what was decided.
    """

    def __init__(
        self,
        model,
        tokenizer,
        prompt: str = DEFAULT_PROMPT,
        settings: GenerationSettings | None = None,
        out: str | None = None,
        record: list[str] | None = None,
        name: str | None = None,
        source: str | None = None,
        store_dtype: str | None = None,
        background_writer: bool | str = False,
        prompt_ids: list[int] | None = None,
        budget: int | str | None = None,
        tensor_parallel: TensorParallel | None = None,
        memory_budget: int | str | None = None,
    ):
        """`prompt_ids` traces exact token ids (the prompt text is then their decoding); `budget`: bytes
        or a size like "8G" (None: the default budget); `memory_budget` the same for what the
        recording holds in memory at once (None: DEFAULT_MEMORY_BUDGET). `tensor_parallel`: this rank of a model sharded
        under torchrun (tracer/distributed.py): rank 0 writes `out`, the other ranks only compute."""
        self.tensor_parallel = tensor_parallel
        self.settings = settings or GenerationSettings()
        self.settings.validate()
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.adapter = adapter_for(model)
        # strings from the model's config and tokenizer are made inert here, where they enter (tracer/inert.py)
        self.name = inert(name or getattr(model.config, "name_or_path", "") or model.__class__.__name__, TEXT_LIMIT)
        self.chat = wants_chat(tokenizer, self.settings.chat, model)
        if prompt_ids is not None:
            self.prompt_ids, self.chat = [int(i) for i in prompt_ids], False
            prompt = tokenizer.decode(self.prompt_ids)
        else:
            self.prompt_ids = encode_prompt(tokenizer, prompt, self.chat) if prompt else []
        if not self.prompt_ids:
            raise PromptError("the prompt is empty")
        facts = cast(dict, inert_value(model_facts(model, self.adapter, self.name, source or self.name)))
        n_ctx = facts.get("n_ctx")
        if n_ctx and len(self.prompt_ids) >= n_ctx:
            raise PromptError(f"the prompt is {len(self.prompt_ids)} tokens, longer than the model's context of {n_ctx}")
        self.max_new_tokens = min(self.settings.max_new_tokens, n_ctx - len(self.prompt_ids)) if n_ctx else self.settings.max_new_tokens
        self.store_dtype = resolve_store_dtype(model.dtype, store_dtype)
        self.keep = NameFilter(record)
        self.device: torch.device = cast(torch.Tensor, self.adapter.embed().weight).device
        self.lens_facts, self.eager_lens = self._lens_plan()
        n_layers = len(self.adapter.layers())
        self.lens_resid_rows = bool(self.lens_facts) and not self.eager_lens and not all(
            self.keep(block_name(i, "hook_resid_post")) for i in range(n_layers)
        )
        self.recorder = Recorder(self.adapter, self.keep, lens_rows=self.eager_lens or self.lens_resid_rows,
                                 lazy_result=bool(self.lens_facts) and not self.eager_lens, reader_normalized=True)
        self._cache_kw = cache_kwarg(model)
        self.sampler = Sampler(self.settings)
        self.eos = set(eos_ids(model, tokenizer)) if self.settings.stop_at_eos else set()
        self.special = set(int(i) for i in (getattr(tokenizer, "all_special_ids", []) or []))
        self.names = recorded_names(self.adapter)
        self.plan = self._budget_plan(facts, budget_bytes(budget), memory_budget_bytes(memory_budget))
        if tensor_parallel is not None and self.plan.streamed:  # shards are gathered once per step: held whole
            self.plan.streamed, self.plan.held_bytes = False, max(self.plan.held_bytes, self.plan.prefill_bytes)
        self._stream_prefill = self.recorder.streams = self.plan.streamed
        self._unembed_rows = self._logit_block_rows(facts) if self.plan.streamed else 0
        if tensor_parallel is not None:
            self.recorder.shards = tensor_parallel.gather
            out = tensor_parallel.out_dir(out)
        if out:
            make_parents(out)
        self.path = out or make_live_dir()  # removed when the process exits (tracer/scratch.py)
        manifest = {
            "schema": SCHEMA,
            "schema_version": SCHEMA_VERSION,
            "created": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "model": facts,
            "tokenizer": inert_value(tokenizer_facts(model, tokenizer)),
            "prompt": prompt,
            "chat": self.chat,
            "prompt_len": len(self.prompt_ids),
            "generation": {**asdict(self.settings), "max_new_tokens": self.max_new_tokens},
            "dtype": {"model": str(model.dtype).replace("torch.", ""), "stored": str(self.store_dtype).replace("torch.", "")},
            "device": str(self.device),
            "attn_implementation": f"{IMPLEMENTATION} (eager attention registered with transformers; records the pattern it uses)",
            "record": self.keep.patterns or ["*"],
            "versions": _versions(),
            "tokens": [self._token(t, i) for i, t in enumerate(self.prompt_ids)],
            "steps": [],
            "finished": False,
            "stop_reason": None,
        }
        if background_writer == "auto":  # overlap disk writes with GPU work; on a CPU a writer
            background_writer = self.device.type == "cuda"  # thread only competes with the forward
        if self.lens_facts:
            facts["lens"] = {**self.lens_facts, "file": LENS_FILE, "k": self.settings.logit_lens_k}
        self.writer = TraceWriter(self.path, manifest, background=bool(background_writer))
        self._save_tokenizer()
        self._save_lens()
        # The traced attention for the session's lifetime (restored in close()): switching per
        # step walks every module twice. Hooks still go in and out around each forward.
        register_attention()
        self._previous_attn = attn_implementation(model)
        if self._previous_attn != IMPLEMENTATION:
            model.set_attn_implementation(IMPLEMENTATION)
        self.recorder.install()  # recording only inside step(); removed in close()
        self.stager = HostStager(self.device, self.store_dtype)
        self._nonfinite: tuple[list[str], int] | None = None  # capture(): (names with NaN/inf, arrays scanned) for commit()
        self.profile: dict[str, float] | None = None  # a dict: steps add seconds per part (bench/trace_overhead.py)
        self.trace = Trace(self.path, self.writer.manifest)
        self.cache = DynamicCache(config=model.config)
        self._next_ids = list(self.prompt_ids)
        self.finished = False
        self.stop_reason: str | None = None
        self._closed = False

    def _budget_plan(self, facts: dict, budget: int, memory: int) -> Plan:
        """The recording budget applied before anything is written: trim the prefill's attention rows
        to fit it (the recorder keeps the last rows), stream the prefill to disk when it would hold
        more than `memory`, or refuse the run (BudgetError)."""
        result = recording_plan(self.names, facts, self.keep, len(self.prompt_ids), self.max_new_tokens,
                                self.store_dtype.itemsize, self.settings.logit_lens_k, budget, memory,
                                once_bytes=self._lens_bytes())
        if not result.fits:
            raise BudgetError(result.refusal())
        self.recorder.row_limit = result.row_limit
        return result

    def _logit_block_rows(self, facts: dict) -> int:
        """Rows of logits a streamed prefill computes at a time from the final norm's output (its
        forward then computes the last row only, with logits_to_keep=1), or 0 where that is not
        possible: the forward has no logits_to_keep, the logits are not recorded, or the final norm
        is not a module of the model."""
        try:
            params = inspect.signature(self.model.forward).parameters
        except (TypeError, ValueError):
            return 0
        norm = self.adapter.final_norm()
        if "logits_to_keep" not in params or not self.keep("logits") or not any(m is norm for m in self.model.modules()):
            return 0
        row = max(1, int(facts.get("vocab_size") or 1) * self.store_dtype.itemsize)
        return max(64, LOGIT_BLOCK_BYTES // row // 64 * 64)

    def _lens_plan(self) -> tuple[dict | None, bool]:
        """(lens facts for the reader or None, compute the lens while tracing?). The lazy lens is
        used only when numpy's final norm + unembedding reproduces the model's on a probe row."""
        if not self.settings.logit_lens:
            return None, False
        facts = self.adapter.lens_facts()
        if facts is None or (self.settings.lens_mode == "auto" and self.device.type == "cuda"):
            return None, True  # on CUDA the lens is cheap, stored per step: no lens file (W_U in float32 is 2 GB for a 128k vocabulary)
        with torch.no_grad():
            arrays = {k: v.float().cpu().numpy() for k, v in self.adapter.lens_arrays().items()}
            lens = LogitLens(facts, arrays)
            probe = torch.randn(2, arrays["unembed.W_U"].shape[0], generator=torch.Generator().manual_seed(0)) * 3  # [2, d_model]
            norm_device = next(self.adapter.final_norm().parameters()).device
            want = self.adapter.unembed(probe.to(norm_device, self.model.dtype)).float().cpu().numpy()  # [2, vocab]
        got = lens.logits(probe.to(self.model.dtype).float().numpy())
        tol = max(1e-3, 2 * torch.finfo(self.model.dtype).eps)  # the model's logits are rounded to its dtype (bfloat16: 1.6e-2)
        if not np.allclose(got, want, rtol=tol, atol=tol * max(1.0, float(np.abs(want).max()))):
            return None, True  # an adapter whose final norm is not what lens.py computes
        return facts, self.settings.lens_mode == "eager"  # "eager" keeps the file too, so both can be compared

    def _save_lens(self) -> None:
        """`lens.safetensors`, once per trace: the final norm's weights and W_U (what the reader's lens
        needs) and, when the reader computes `attn.hook_result`, each layer's W_O [n_heads, d_head,
        d_model]. Streamed from the weights' memory into the file (no serialised copy)."""
        arrays = {name: host_array(w.to(dtype).cpu()) for name, (w, dtype) in self._lens_weights().items()}
        if arrays:
            self.writer.write_arrays(LENS_FILE, arrays)

    def _lens_weights(self) -> dict[str, tuple[torch.Tensor, torch.dtype]]:
        """What `lens.safetensors` holds: {stored name: (weight, dtype it is stored in)}; empty
        when the trace has no lens file."""
        if not self.lens_facts:
            return {}
        weights = dict(self.adapter.lens_arrays())
        if self.recorder.lazy_result:
            weights.update({k: w for k, w in self.adapter.result_weights().items() if self.keep(k.replace(".W_O", ".hook_result"))})
        stored_weights = {}
        for name, w in weights.items():
            w = w.detach()
            stored = stored_layout(name, tuple(w.shape), lambda order, w=w: w.permute(order).is_contiguous())
            if stored is not None:  # W_U and W_O in the model's own layout: written without a transposing copy
                name, w = stored[0], w.permute(stored[1])
            big = name.startswith("unembed.W_U") or ".attn.W_O" in name  # stored like the activations
            stored_weights[name] = (w, self.store_dtype if big else torch.float32)
        return stored_weights

    def _lens_bytes(self) -> int:
        """Bytes of `lens.safetensors` (written once per trace), for the budget's estimate."""
        return sum(w.numel() * dtype.itemsize for w, dtype in self._lens_weights().values())

    def _save_tokenizer(self) -> None:
        """`tokenizer.json` beside the manifest: readers decode any id (candidates, logit lens)
        with the `tokenizers` library, without torch or transformers."""
        backend = getattr(self.tokenizer, "backend_tokenizer", None)
        if backend is None:
            return
        self.writer.write_file(TOKENIZER_FILE, backend.to_str().encode("utf-8"))  # where the steps go
        self.writer.manifest["tokenizer"]["file"] = TOKENIZER_FILE

    @classmethod
    def open(
        cls,
        model: str | None = None,
        prompt: str = DEFAULT_PROMPT,
        settings: GenerationSettings | None = None,
        out: str | None = None,
        device: str = "auto",
        dtype: str = "auto",
        device_map: str | None = None,
        record: list[str] | None = None,
        store_dtype: str | None = None,
        progress=None,
        background_writer: bool | str = False,
        budget: int | str | None = None,
        tensor_parallel: bool = False,
        memory_budget: int | str | None = None,
    ) -> LiveSession:
        """Load a model by spec (None = the embedded SmolLM2) and open a session on it. `tensor_parallel`:
        shard it over the ranks of torchrun (every rank calls this; tracer/distributed.py)."""
        tp = TensorParallel(*init_distributed()) if tensor_parallel else None
        loaded = load_model(model, device=device, dtype=dtype, device_map=device_map, progress=progress,
                            tp_size=tp.size if tp else 0)
        return cls(
            loaded.model,
            loaded.tokenizer,
            prompt,
            settings,
            out=out,
            record=record,
            name=loaded.name,
            source=loaded.source,
            store_dtype=store_dtype,
            background_writer=background_writer,
            budget=budget,
            tensor_parallel=tp,
            memory_budget=memory_budget,
        )

    # -- stepping -----------------------------------------------------------------------------
    _steps_started = 0
    _stream_prefill = False  # the plan streams the prefill to disk (a branch session holds its steps whole)
    _unembed_rows = 0

    @property
    def steps_started(self) -> int:
        """Steps computed or being computed (the index of the next step)."""
        return self._steps_started

    def _token(self, token_id: int, position: int) -> dict:
        return {
            "id": int(token_id),
            "text": self.tokenizer.decode([token_id]),
            "piece": str(self.tokenizer.convert_ids_to_tokens(int(token_id))),
            "special": int(token_id) in self.special,
            "position": position,
        }

    def step(self) -> Step | None:
        """Compute, record and write the next step; None once generation has finished."""
        if self.finished or self._closed:
            return None
        ids = torch.tensor([self._next_ids], device=self.device)  # [1, T]
        t0 = time.perf_counter()
        unembed = self._unembed_rows if self._streams_next() else 0
        kwargs = {self._cache_kw: self.cache, **({"logits_to_keep": 1} if unembed else {})}
        out, arrays = self.capture(lambda: self.model(input_ids=ids, use_cache=True, **kwargs), unembed)
        logits = self._recorded_last_logits(out.logits[0, -1], arrays) if unembed else out.logits[0, -1]
        clock = _Clock(self.profile)
        with torch.no_grad():
            chosen, record, sample_arrays = self.sampler(logits)
        arrays.update(sample_arrays)
        clock("sampler")
        return self.commit(arrays, chosen, record, ids.shape[1], time.perf_counter() - t0)

    def _streams_next(self) -> bool:
        """The next step is a prefill that the plan streams to disk (tracer/budget.py, memory)."""
        return self._stream_prefill and self._steps_started == 0

    def _recorded_last_logits(self, model_row: torch.Tensor, arrays) -> torch.Tensor:
        """The last row of the logits the recorder computed from the final norm's output (what
        the trace stores, and so what the sampler reads), checked against the model's own."""
        row = self.recorder.last_logits
        self.recorder.last_logits = None
        want = model_row.detach().float()
        if row is None or not torch.allclose(row.float(), want, rtol=1e-3, atol=1e-3 * max(1.0, float(want.abs().max()))):
            if isinstance(arrays, StepStream):
                arrays.abort()
            raise BudgetError("this model's logits are not its LM head applied to its final norm's output, so its prefill "
                              "cannot be streamed; raise --memory-budget above the prefill's size")
        return row

    def capture(self, run, unembed: int = 0):
        """Run `run()` (one forward) with recording on: (its output, the step's arrays without
        sampling). A prefill the plan streams is written to disk as the forward produces it: its
        arrays are then a StepStream (`unembed`: the forward computes the last row of logits
        only, the recorder every row, that many at a time)."""
        if self._streams_next():
            return self._capture_streamed(run, unembed)
        clock = _Clock(self.profile)
        with torch.no_grad(), self.recorder.capturing():
            out = run()
        clock("forward (hooks, eager attention)")
        with torch.no_grad():
            tensors = self.recorder.take()
            self._note_norm_inputs()
            lens = {}
            if self.eager_lens:
                lens = self._logit_lens(self.recorder.take_lens_rows())
            elif self.lens_resid_rows:
                tensors[RESID_ROWS] = self.recorder.take_lens_rows()  # [n_layers, d_model]
            clock("norm scales, lens")
            self._wait_for_slot()
            staged = self.stager.stage(tensors)  # one gather and NaN/inf scan; CUDA: one pinned copy on a side stream
            arrays = staged.arrays()
        self._nonfinite = (staged.nonfinite, len(arrays))  # commit() scans what is added after this
        arrays.update(lens)
        clock("host copies, nonfinite scan")
        return out, arrays

    def _capture_streamed(self, run, unembed: int):
        """capture() for a step streamed to disk: each block's tensors go to the host (converted,
        scanned) and into the step's file as the forward returns from the block, then are released."""
        clock = _Clock(self.profile)
        n_layers = len(self.recorder.layers)
        stream = self.writer.open_stream([n for n in self.names if self.keep(n)] + [block_name(i, "attn.hook_o_input") for i in range(n_layers)])
        stager, recorder = self.stager, self.recorder

        def sink(tensors: dict) -> None:
            staged = stager.host(tensors)
            stream.nonfinite += staged.nonfinite
            for name, array in staged.arrays().items():
                stream.add(name, array)

        def row_sink(name: str, rows: int, blocks) -> None:
            def host():
                for block in blocks:
                    staged = stager.host({name: block})
                    if staged.nonfinite and name not in stream.nonfinite:
                        stream.nonfinite.append(name)
                    yield staged.arrays()[name]

            stream.add_rows(name, rows, host())

        recorder.sink, recorder.row_sink, recorder.unembed_rows = sink, row_sink, unembed
        try:
            with torch.no_grad(), recorder.capturing():
                out = run()
            clock("forward (hooks, eager attention), streamed to disk")
            with torch.no_grad():
                recorder.take()
                self._note_norm_inputs()
                lens = {}
                if self.eager_lens:
                    lens = self._logit_lens(recorder.take_lens_rows())
                elif self.lens_resid_rows:
                    sink({RESID_ROWS: recorder.take_lens_rows()})  # [n_layers, d_model]
        except OSError as exc:
            raise self.writer.stream_failed(exc, stream) from None
        except BaseException:
            stream.abort()
            raise
        finally:
            recorder.sink = recorder.row_sink = None
            recorder.unembed_rows = 0
            recorder.tensors = {}
        self._nonfinite = (list(stream.nonfinite), 0)
        stream.update(lens)
        clock("norm scales, lens, rest of the step")
        return out, stream

    def _note_norm_inputs(self) -> None:
        """Put newly learned norm inputs (Recorder.norm_inputs) in the manifest before the step that
        relies on them is written: readers compute hook_normalized from them."""
        facts = self.writer.manifest["model"]
        learned = self.recorder.norm_inputs
        if len(learned) != len(facts.get("norm_inputs") or {}):
            facts["norm_inputs"] = {p: {"input": name, "kind": kind} for p, (name, kind) in learned.items()}
            self.writer.update()

    def _wait_for_slot(self) -> None:
        """The stager's next pinned slot was last used SLOTS steps ago: make sure the writer has written it."""
        if self.writer.steps_written < self._steps_started - SLOTS + 1:
            self.writer.flush()

    def commit(self, arrays: dict, chosen: int, record: dict, width: int, seconds: float):
        """Write the step that computed `width` positions and chose `chosen` (what step() returns).
        `stepscope.record` calls capture() and commit() around a user's own generate call."""
        index = self._steps_started
        start = len(self.prompt_ids) + index - 1 if index else 0
        self._steps_started += 1
        position = start + width
        token = self._token(chosen, position)
        entry: dict = {
            "index": index,
            "kind": "prefill" if index == 0 else "decode",
            "positions": [start, position],
            "token": token,
            "sampling": record,
            "seconds": round(seconds, 6),
        }
        if self._nonfinite is not None:  # the staged tensors were scanned on the way to the host
            bad, n_staged = self._nonfinite
            if isinstance(arrays, (StepArrays, StepStream)):  # its flat buffer / streamed arrays were scanned; extra was added
                added = arrays.extra
            else:
                added = dict(list(arrays.items())[n_staged:]) if len(arrays) > n_staged else {}
            entry["nonfinite"], self._nonfinite = bad + nonfinite_names(added), None
        if self._settings_changed:
            entry["settings"] = self.live_settings()  # changed live: what this step ran with
        self._next_ids = [chosen]
        if chosen in self.eos:
            self.finished, self.stop_reason = True, "eos"
        elif self._steps_started >= self.max_new_tokens:
            self.finished, self.stop_reason = True, "max_new_tokens"
        clock = _Clock(self.profile)
        self.writer.add_step(arrays, entry, token)
        clock("write")
        if not self.writer.background:
            step = self._sync_trace()
            clock("reader sync")
            return step
        return None if self.finished else True  # background writer: the step lands shortly

    # -- live settings ------------------------------------------------------------------------
    LIVE_FIELDS = ("do_sample", "temperature", "top_k", "top_p", "min_p", "seed", "max_new_tokens")
    _settings_changed = False

    def update_settings(self, **changes) -> dict:
        """Change sampler settings and the token limit from the next step on, validated first
        (ValueError names the problem; nothing changes then). A seed change reseeds the sampler;
        the limit is clamped to the context and may finish or resume the generation. Every later
        step entry carries the settings it ran with (`settings`), and the manifest lists the
        changes (`generation.changes`). Returns the changes applied."""
        unknown = sorted(set(changes) - set(self.LIVE_FIELDS))
        if unknown:
            raise ValueError(f"cannot change {', '.join(unknown)} in a live session")
        settings = replace(self.settings, **changes)
        settings.validate()
        n_ctx = (self.writer.manifest.get("model") or {}).get("n_ctx")
        limit = min(settings.max_new_tokens, int(n_ctx) - len(self.prompt_ids)) if n_ctx else settings.max_new_tokens
        self.settings = self.sampler.settings = settings
        if "seed" in changes:
            self.sampler.generator.manual_seed(int(settings.seed))
        self.max_new_tokens = settings.max_new_tokens = limit
        done = self._steps_started
        if self.finished and self.stop_reason == "max_new_tokens" and done < limit:
            self.finished, self.stop_reason = False, None  # room again: generation goes on
        elif not self.finished and done >= limit:
            self.finished, self.stop_reason = True, "max_new_tokens"
        generation = self.writer.manifest.setdefault("generation", {})
        generation.update(self.live_settings())
        generation.setdefault("changes", []).append({"from_step": done, **changes})
        self._settings_changed = True
        return changes

    def live_settings(self) -> dict:
        """The settings a live session can change, as they are now."""
        return {f: getattr(self.settings, f) for f in self.LIVE_FIELDS}

    def _logit_lens(self, resid: torch.Tensor) -> dict[str, np.ndarray]:
        """Top-k of unembed(ln_final(resid_post_L)) at the last position, for every layer."""
        norm_device = next(self.adapter.final_norm().parameters(), resid).device
        logits = self.adapter.unembed(resid.to(norm_device)).float()  # [n_layers, vocab]
        probs = torch.softmax(logits, -1)
        top = torch.topk(probs, min(self.settings.logit_lens_k, probs.shape[-1]), dim=-1)
        return {
            "logit_lens.ids": top.indices.cpu().numpy().astype(np.int64),  # [n_layers, k]
            "logit_lens.probs": top.values.cpu().numpy().astype(np.float32),  # [n_layers, k]
        }

    def _sync_trace(self) -> Step:
        self.trace.steps.sync(self.writer.manifest["steps"])
        return self.trace.steps[len(self.trace.steps) - 1]

    def run(self, on_step=None) -> None:
        """Generate to the end (EOS or the token limit); `on_step(index)` after each step."""
        try:
            while not self.finished:
                self.step()
                if on_step is not None:
                    on_step(self._steps_started)
        except KeyboardInterrupt:
            self.stop_reason = "interrupted"
            raise
        finally:
            self.close(self.stop_reason if not self.finished else None)

    # -- output -------------------------------------------------------------------------------
    def save(self, path: str) -> str:
        """Copy the whole session so far to `path`: the trace (step files first, manifest last) and
        every branch made of it (`branches/`, as recorded), so the copy reopens with all its runs.
        Branch sessions write their steps before `step()` returns; the caller holds them still."""
        self.writer.flush()
        if os.path.abspath(path) == os.path.abspath(self.path):
            return path
        written = copy_trace(self.writer.manifest, self.path, path)
        branches = os.path.join(self.path, BRANCHES_DIR)
        if os.path.isdir(branches):
            try:
                shutil.copytree(branches, os.path.join(written, BRANCHES_DIR), symlinks=True,
                                ignore=shutil.ignore_patterns(f"{TEMP_PREFIX}*"))
            except OSError as exc:
                raise TraceWriteError(f"cannot save the branches to {written}: {exc.strerror or exc}") from None
        return written

    def close(self, stop_reason: str | None = None) -> None:
        """Flush and finish the manifest. A temporary session directory is kept until the process ends
        (tracer/scratch.py removes it then)."""
        if self._closed:
            return
        self._closed = True
        try:
            self.recorder.remove()
            if self._previous_attn not in (None, IMPLEMENTATION):
                self.model.set_attn_implementation(self._previous_attn)
        finally:
            self.writer.close(finished=self.finished, stop_reason=self.stop_reason or stop_reason)
        self._sync_trace() if self.writer.steps_written else None

    @property
    def closed(self) -> bool:
        """close() has run: the recorder is out and the model's attention implementation restored."""
        return self._closed

    @property
    def previous_attn(self) -> str | None:
        """The model's attention implementation before the session (restored by close())."""
        return self._previous_attn

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close("interrupted" if exc[0] is KeyboardInterrupt else ("error" if exc[0] else None))


def _versions() -> dict:
    return {
        "stepscope": __version__,
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "numpy": np.__version__,
        "python": platform.python_version(),
    }


__all__ = ["DEFAULT_PROMPT", "LIVE_DIR_PREFIX", "BudgetError", "GenerationSettings", "LiveSession", "PromptError", "block_name", "recorded_names"]
