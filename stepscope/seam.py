"""The seam between the reading side and the recording side.

This is the one module whose functions import the recording side (stepscope.tracer.session,
.loading, .record, .branch, .interventions, ..., and with them torch and transformers) inside
their bodies. Everything that replays a trace (`import stepscope`, `stepscope view`, the
debugger on a saved trace, the CLI's parser) imports only this module's name, never torch;
the first call that needs a model pays for torch then.

It also imports textual-serve when `stepscope serve` starts a server (aiohttp and jinja are slow
to import: no other command pays for them). Every other module imports at its top. Callers: the CLI's `trace`, `run`, `serve` and `info --load`,
`stepscope.record` / `record_generate` / `load_model`, and the debugger's live session and branches.
"""

from __future__ import annotations

import os
import sys
import warnings

import numpy as np

from stepscope.tracer import load_trace
from stepscope.tracer.names import block_name
from stepscope.tracer.patch_format import model_spec


# -- loading a model ------------------------------------------------------------------------------
def load_model(spec: str | None = None, device: str = "auto", dtype: str = "auto", device_map: str | None = None,
               progress=None):
    """A LoadedModel (model, tokenizer, name, source) from a spec: None or `smollm2` is the embedded SmolLM2."""
    from stepscope.tracer.loading import load_model as load

    return load(spec, device=device, dtype=dtype, device_map=device_map, progress=progress)


def check_model_options(spec: str | None, device: str, dtype: str) -> None:
    """ModelLoadError for a device, dtype or model path that loading would refuse, before loading."""
    from stepscope.tracer.loading import check_model_options as check

    check(spec, device, dtype)


def loaded_model_facts(spec: str | None, device: str = "cpu", dtype: str = "auto") -> dict:
    """The model facts a trace's manifest would hold, from the loaded weights (`stepscope info --load`)."""
    from stepscope.tracer.adapters.registry import adapter_for
    from stepscope.tracer.loading import load_model as load
    from stepscope.tracer.model_info import model_facts

    loaded = load(spec, device=device, dtype=dtype)
    return model_facts(loaded.model, adapter_for(loaded.model), loaded.name, loaded.source)


def quiet_transformers() -> None:
    """transformers' warnings and progress bars off; stepscope's own notices one line on stderr."""
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    warnings.filterwarnings("ignore")
    from stepscope.tracer.adapters.generic import GenericFallbackWarning

    warnings.simplefilter("default", GenericFallbackWarning)  # the one notice a user must see

    def show(message, category, *_args, **_kwargs):
        print(f"stepscope: note: {message}", file=sys.stderr)

    warnings.showwarning = show
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()


# -- live sessions ----------------------------------------------------------------------------------
def generation_settings(**fields):
    """A GenerationSettings (tracer/session.py) from its fields; `.validate()` raises ValueError."""
    from stepscope.tracer.session import GenerationSettings

    return GenerationSettings(**fields)


def open_live_session(model: str | None = None, prompt: str | None = None, **options):
    """`LiveSession.open(model, prompt, **options)`; prompt None is the default prompt. Options: settings,
    out, device, dtype, device_map, record, store_dtype, progress, background_writer, budget, memory_budget."""
    from stepscope.tracer.session import DEFAULT_PROMPT, LiveSession

    return LiveSession.open(model, prompt=DEFAULT_PROMPT if prompt is None else prompt, **options)


def open_default_session(progress=None):
    """The embedded default model (SmolLM2) on the default prompt, as a plain completion (no chat
    template), like `stepscope` with no arguments."""
    from stepscope.tracer.session import GenerationSettings, LiveSession

    return LiveSession.open(None, settings=GenerationSettings(chat=False), progress=progress)


def tensor_parallel_leader():
    """Rank 0's side of a tensor-parallel debugger (tracer/tp_follow.py): `open(opener)` opens the session
    on every rank; TensorParallelError outside torchrun."""
    from stepscope.tracer.tp_follow import Leader

    return Leader()


def follow_leader(opener) -> int:
    """A rank other than 0 of a tensor-parallel debugger: rank 0's calls made on this rank's session
    (`opener()` opens it) until rank 0 ends; the exit status."""
    from stepscope.tracer.tp_follow import follow

    return follow(opener)


def check_out_dir(path: str) -> str:
    """"new" or "trace" (replaced only once the new run has a step); TraceWriteError for a directory
    holding anything else, or a new one whose missing parents cannot be created (the session creates
    them). Touches nothing."""
    from stepscope.tracer.trace_format import TraceWriteError
    from stepscope.tracer.writer import out_dir_state

    parent = os.path.dirname(os.path.abspath(path))
    if os.path.isdir(parent):
        return out_dir_state(path)
    ancestor = parent
    while not os.path.lexists(ancestor):
        ancestor = os.path.dirname(ancestor)
    if not os.path.isdir(ancestor):
        raise TraceWriteError(f"cannot create trace directory {path}: {ancestor} is not a directory")
    if not os.access(ancestor, os.W_OK):
        raise TraceWriteError(f"cannot create trace directory {path}: {ancestor} is not writable")
    return "new"


# -- branches and interventions (the debugger's live session) ---------------------------------------
def make_branch_set(session):
    """A BranchSet over the live session (made before its first step), None where branching is unavailable.
    A session led over tensor-parallel ranks has its own (its branches are made on every rank)."""
    from stepscope.tracer.branch import BranchSet
    from stepscope.tracer.tp_follow import LeaderRun

    if isinstance(session, LeaderRun):
        return session.branch_set()
    try:
        return BranchSet(session)
    except Exception:  # noqa: BLE001 - branching is optional: the debugger works without it
        return None


def build_intervention(spec: tuple, step: int, session):
    """(a worker thread) The tracer Intervention of a spec parsed by the debugger, (kind, args, only), from
    `step` on (or at it only): zero_head, mean_head, scale_head, zero_neuron, clamp_neuron, steer, patch."""
    from stepscope.tracer import interventions

    kind, args, only = spec
    if kind == "steer":
        layer, p1, p2, scale = args
        name = block_name(layer, "hook_resid_post")
        a, _ = interventions.row_at(session.trace, name, p1)  # [d_model]
        b, _ = interventions.row_at(session.trace, name, p2)  # [d_model]
        vector = scale * (a.astype(np.float32) - b.astype(np.float32))  # [d_model]
        return interventions.steer(layer, vector, name="hook_resid_post", from_step=step, only=only,
                                   source=f"{scale:g} × ({name}[{p1}] − {name}[{p2}]) of this run")
    if kind == "patch":
        layer, name, position, path = args
        return interventions.patch(layer, name, position, load_trace(path), prompt_len=session.trace.prompt_len)
    if kind == "mean_head":
        layer, head = args
        return interventions.mean_head(layer, head, session.trace, step=0, from_step=step, only=only)
    if kind not in ("zero_head", "scale_head", "zero_neuron", "clamp_neuron"):
        raise ValueError(f"unknown intervention {kind!r}")
    return getattr(interventions, kind)(*args, from_step=step, only=only)


def editable_names() -> tuple[str, ...]:
    """The tensor names an intervention can patch."""
    from stepscope.tracer.interventions import EDITABLE

    return tuple(EDITABLE)


# -- the Python API -------------------------------------------------------------------------------
def as_torch(arrays: dict) -> dict:
    """numpy arrays as torch tensors: floats as float32, integers as int64."""
    import torch

    return {n: torch.from_numpy(a.astype(np.float32) if a.dtype.kind == "f" else a.astype(np.int64)) for n, a in arrays.items()}


def record(model, tokenizer, out=None, **kwargs):
    """Context manager tracing the `model.generate(...)` call made inside it (tracer/record.py)."""
    from stepscope.tracer.record import record as recording

    return recording(model, tokenizer, out=out, **kwargs)


def record_generate(model, tokenizer, *args, **kwargs):
    """`output, trace = record_generate(model, tokenizer, input_ids, out=..., **generate_kwargs)`."""
    from stepscope.tracer.record import record_generate as run

    return run(model, tokenizer, *args, **kwargs)


# -- the browser ----------------------------------------------------------------------------------
def serve_command(command: str, host: str, port: int, title: str, public_url: str | None = None) -> bool:
    """Serve `command` (a shell command running the debugger) to browsers with textual-serve until Ctrl+C
    or SIGTERM; True when one of them stopped it. ImportError when textual-serve is not installed."""
    from textual_serve.server import Server

    server = Server(command, host=host, port=port, title=title, public_url=public_url)
    stopped = []
    request_exit = server.request_exit

    def on_signal() -> None:  # the server's own handler for SIGINT and SIGTERM, noted
        stopped.append(True)
        request_exit()

    server.request_exit = on_signal  # type: ignore[method-assign]  # wraps this one server's handler
    server.serve()
    return bool(stopped)


# -- activation patching ----------------------------------------------------------------------------
def patching_model(trace, device: str = "auto"):
    """The model a trace was recorded from, loaded as its manifest says (an opaque handle for `patching_sweep`)."""
    from stepscope.tracer.loading import load_model as load

    quiet_transformers()
    return load(model_spec(trace), device=device).model


def patching_sweep(model, clean, corrupt, site: str = "resid_pre", step: int = 0, method: str = "patch", progress=None):
    """A PatchingResult (tracer/patch_format.py): every cell of `site` of the corrupted run restored from
    the clean trace (method "patch") or its first-order estimate ("attribution"); tracer/patching.py."""
    from stepscope.tracer.patching import sweep

    return sweep(model, clean, corrupt, site=site, step=step, method=method, progress=progress)
