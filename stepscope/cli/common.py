"""What the commands share: exit codes, CliError, the model and generation options and their checks,
the live session they open, and running the app on a terminal."""

from __future__ import annotations

import argparse
import fnmatch
import math
import os
import struct
import sys

from stepscope import seam
from stepscope.tracer.budget import parse_size
from stepscope.tracer.inert import inert
from stepscope.tracer.names import BLOCK_NAMES, FINAL_NAMES, HEAD_NAMES, SAMPLING_NAMES
from stepscope.tracer.trace_format import TraceError

EXIT_OK = 0
EXIT_INTERNAL = 1  # an unexpected failure (and `diff`: the traces differ)
EXIT_USAGE = 2  # bad input: an option, a path, a trace, a model
EXIT_INTERRUPTED = 130  # Ctrl-C
EXIT_TERMINATED = 143  # SIGTERM
USER_ERRORS = {"ModelLoadError", "UnsupportedModel", "PromptError"}  # recording-side errors, named, not imported
MAX_SEED = 2**63 - 1


class CliError(Exception):
    """A one-line message for stderr."""


def is_user_error(exc: BaseException) -> bool:
    """Bad input (exit 2) rather than a failure of stepscope (exit 1)."""
    names = {c.__name__ for c in type(exc).__mro__}
    return isinstance(exc, (CliError, TraceError, ValueError, FileNotFoundError)) or bool(names & USER_ERRORS)


# -- argument parsing ----------------------------------------------------------------------------
class DefaultsFormatter(argparse.HelpFormatter):
    """`--help` names every option's default: from its help text, else appended from the parser."""

    def _get_help_string(self, action):
        text = action.help or ""
        if "default" in text or action.default in (None, argparse.SUPPRESS) or action.required:
            return text
        if action.nargs == 0 and isinstance(action.default, bool):  # a store_true / store_false flag
            return f"{text} (default: {'off' if action.default is False else 'on'})"
        return f"{text} (default: %(default)s)".strip()


class SubParser(argparse.ArgumentParser):
    """A command's parser: its help lists defaults too."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("formatter_class", DefaultsFormatter)
        super().__init__(*args, **kwargs)


def model_options(p: argparse.ArgumentParser) -> list[argparse.Action]:
    g = p.add_argument_group("model")
    return [
        g.add_argument("--model", default=None, help="hub id, local model directory or .gguf file; `smollm2` or `SmolLM2-135M-Instruct` name the embedded model (default: the embedded SmolLM2-135M-Instruct, GGUF Q4_1 dequantised)"),
        g.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N"),
        g.add_argument("--dtype", default="auto", choices=["auto", "float32", "float16", "bfloat16"], help="model dtype"),
        g.add_argument("--device-map", default=None, choices=["auto"], help="spread a large model over devices with accelerate (default: one device)"),
    ]


def parallel_options(p: argparse.ArgumentParser) -> argparse.Action:
    return p.add_argument_group("parallelism").add_argument(
        "--tensor-parallel", action="store_true",
        help="shard the model's heads and MLP neurons over the ranks of torchrun "
             "(torchrun --nproc-per-node N -m stepscope ...); rank 0 writes the trace and shows progress "
             "or the debugger, the other ranks follow it (default: off)")


def rank(args) -> int:
    """This process's rank under --tensor-parallel (torchrun's RANK), 0 otherwise."""
    return int(os.environ.get("RANK", "0") or 0) if getattr(args, "tensor_parallel", False) else 0


def generation_options(p: argparse.ArgumentParser) -> list[argparse.Action]:
    g = p.add_argument_group("generation")
    actions = [
        g.add_argument("--prompt", default=None, help='prompt text (default: "The capital of France is", as raw text)'),
        g.add_argument("--max-new-tokens", type=int, default=16, help="tokens to generate"),
        g.add_argument("--sample", action="store_true", help="sample instead of greedy decoding (default: greedy, or sampling when a sampling option is given)"),
        g.add_argument("--greedy", action="store_true", help="greedy decoding even when sampling options are given (default: greedy)"),
        g.add_argument("--temperature", type=float, default=None, help="sampling temperature (default: 1.0)"),
        g.add_argument("--top-k", type=int, default=None, help="keep the k most likely tokens (default: off)"),
        g.add_argument("--top-p", type=float, default=None, help="nucleus sampling mass (default: 1.0, off)"),
        g.add_argument("--min-p", type=float, default=None, help="drop tokens below min-p times the top probability (default: 0, off)"),
        g.add_argument("--seed", type=int, default=0, help="sampling seed"),
    ]
    chat = g.add_mutually_exclusive_group()
    actions += [
        chat.add_argument("--chat", dest="chat", action="store_true", default=None, help="apply the chat template (default: on when the tokenizer is an instruct/chat tokenizer and --prompt is given)"),
        chat.add_argument("--no-chat", dest="chat", action="store_false", help="raw text, no chat template (default: see --chat)"),
        g.add_argument("--logit-lens-k", type=int, default=10, help="tokens kept per layer by the logit lens"),
        g.add_argument("--no-logit-lens", dest="logit_lens", action="store_false", help="skip the per-layer logit lens, faster on a CPU (default: lens on)"),
        g.add_argument("--record", default=None, help="comma-separated name patterns to record, e.g. 'blocks.*.attn.hook_pattern,logits' (default: every name)"),
        g.add_argument("--store-dtype", default="auto", choices=["auto", "float32", "float16", "bfloat16"], help="dtype of stored tensors (auto: float16 for float16 models, else float32; bfloat16: half the bytes of float32, read back as float32)"),
        g.add_argument("--budget", default=None, help="disk budget for the trace, e.g. 8G or 500M (default: 8G; beyond it see docs/TRACE_FORMAT.md, Budget)"),
        g.add_argument("--memory-budget", default=None, help="memory the recording may hold at once, e.g. 1G or 512M (default: 1G; a longer prefill is streamed to disk as it is computed, see docs/RECORDING.md, Memory)"),
    ]
    return actions


# -- argument validation (every value checked before anything is loaded or written) -------------
def validate_args(args) -> None:
    """One CliError line for any out-of-range value of `trace` / `run`."""
    if args.prompt is not None and args.prompt == "":
        raise CliError("--prompt is empty; give a prompt or leave the option out for the default")
    if not 0 <= args.seed <= MAX_SEED:
        raise CliError(f"--seed must be in [0, 2**63 - 1], got {inert(args.seed, 40)}")
    if not 1 <= args.max_new_tokens <= 1_000_000:
        raise CliError(f"--max-new-tokens must be in [1, 1000000], got {args.max_new_tokens}")
    if not 1 <= args.logit_lens_k <= 10_000:
        raise CliError(f"--logit-lens-k must be in [1, 10000], got {args.logit_lens_k}")
    for flag, value in (("--temperature", args.temperature), ("--top-p", args.top_p), ("--min-p", args.min_p)):
        if value is not None and not math.isfinite(value):  # ranges: GenerationSettings.validate
            raise CliError(f"{flag} must be a finite number, got {value}")
    if args.top_k is not None and not 0 <= args.top_k <= 1 << 31:
        raise CliError(f"--top-k must be >= 0, got {args.top_k}")
    out = getattr(args, "out", None)  # `serve` writes no trace of its own
    if out is not None and ("\0" in out or not out.strip()):
        raise CliError("--out is not a usable path")
    for option, value in (("--budget", args.budget), ("--memory-budget", getattr(args, "memory_budget", None))):
        if value is not None:
            try:
                parse_size(value, option)
            except ValueError as exc:
                raise CliError(inert(str(exc))) from None
    record_patterns(args.record)


def record_patterns(spec: str | None) -> list[str] | None:
    """--record's patterns; CliError when given but empty or when one matches no recordable name."""
    if spec is None:
        return None
    patterns = [p.strip() for p in spec.split(",") if p.strip()]
    valid = "valid patterns name recorded tensors, e.g. blocks.*.attn.hook_pattern, blocks.3.hook_resid_post, *hook_z, logits"
    if not patterns:
        raise CliError(f"--record {inert(spec, 60)!s} holds no pattern; {valid}")
    vocabulary = [*HEAD_NAMES, *FINAL_NAMES, *SAMPLING_NAMES] + [f"blocks.{i}.{n}" for i in range(1024) for n in BLOCK_NAMES]
    for p in patterns:
        if not fnmatch.filter(vocabulary, p):
            raise CliError(f"--record pattern {inert(p, 80)} matches no recordable name; {valid}")
    return patterns


def generation_settings(args):
    """The GenerationSettings of the generation options, every value checked (CliError)."""
    validate_args(args)
    sampling_knobs = [args.temperature, args.top_k, args.top_p, args.min_p]
    do_sample = args.sample or (not args.greedy and any(v is not None for v in sampling_knobs))
    settings = seam.generation_settings(
        do_sample=do_sample,
        temperature=1.0 if args.temperature is None else args.temperature,
        top_k=args.top_k or 0,
        top_p=1.0 if args.top_p is None else args.top_p,
        min_p=args.min_p or 0.0,
        seed=args.seed,
        max_new_tokens=args.max_new_tokens,
        chat=args.chat,
        logit_lens_k=args.logit_lens_k,
        logit_lens=args.logit_lens,
    )
    try:
        settings.validate()
    except ValueError as exc:
        raise CliError(str(exc)) from None
    return settings


def check_model_options(args) -> None:
    """Refuse what loading the model would refuse at once (device, dtype, a missing model path),
    with the same one-line messages as loading."""
    seam.check_model_options(args.model, args.device, args.dtype)


# -- the live session of `trace`, `run` and `serve` ----------------------------------------------
DAMAGED = (struct.error, EOFError, UnicodeDecodeError, IndexError, KeyError, OverflowError, MemoryError)


def open_session(args, settings, progress=None, background_writer=False):
    """A LiveSession from the model and generation options (its recording policy: tracer/session.py)."""
    if args.chat is None and args.prompt is None:
        settings.chat = False  # the default prompt is a completion prompt, not a chat turn
    try:
        return seam.open_live_session(
            args.model,
            args.prompt,
            settings=settings,
            out=args.out,
            device=args.device,
            dtype=args.dtype,
            device_map=args.device_map,
            record=record_patterns(args.record),
            store_dtype=args.store_dtype,
            progress=progress,
            background_writer=background_writer,
            budget=args.budget,
            memory_budget=getattr(args, "memory_budget", None),
            **({"tensor_parallel": True} if getattr(args, "tensor_parallel", False) else {}),
        )
    except (CliError, KeyboardInterrupt):
        raise
    except Exception as exc:  # a damaged model file: one line naming the model, not parser internals
        if type(exc).__module__.startswith("stepscope.tracer") or type(exc).__name__ in ("PromptError", "ModelLoadError", "UnsupportedModel"):
            raise
        if isinstance(exc, DAMAGED):
            raise CliError(f"cannot load model {inert(args.model or 'smollm2')}: the file is damaged or not a model stepscope reads ({type(exc).__module__}.{type(exc).__name__})") from None
        raise


# -- the app on a terminal -----------------------------------------------------------------------
def check_terminal() -> None:
    """The debugger draws on a terminal: without one it would wait forever (under `stepscope serve`
    textual-serve's web driver draws in the browser instead: no TTY needed)."""
    if os.environ.get("TEXTUAL_DRIVER", "").endswith(":WebDriver"):
        return
    if not (sys.stdin.isatty() and sys.stdout.isatty()):
        raise CliError("the debugger needs a terminal (stdin and stdout are not a TTY); "
                       "`stepscope trace` records without one")


def run_app(app) -> int:
    """Run the app; its exit status (`exit_status`)."""
    app.run()
    return exit_status(app)


def exit_status(app) -> int:
    """The status of an app that has ended: an uncaught exception inside it is one line and 1, never 0;
    a model that failed to load is its one line and 2 (bad input) or 1; Ctrl-C 130; else 0."""
    if app.load_failure is not None:
        failure = app.load_failure
        text = str(failure).strip().splitlines()
        print(f"stepscope: {inert(text[0] if text else type(failure).__name__, 500)}", file=sys.stderr)
        return EXIT_USAGE if is_user_error(failure) else EXIT_INTERNAL
    if app.crash is not None:
        print(inert(f"stepscope: internal error: {type(app.crash).__name__}: {app.crash}", newlines=True).splitlines()[0]
              + " (STEPSCOPE_DEBUG=1 shows the traceback)", file=sys.stderr)
        return EXIT_INTERNAL
    return app.return_code or EXIT_OK
