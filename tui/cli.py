"""The `stepscope` command line.

    stepscope                               the debugger on the embedded SmolLM2, default prompt
    stepscope run --model M --prompt P      the debugger on a live session
    stepscope view TRACE_DIR                replay a saved trace (no torch needed)
    stepscope trace --prompt P --out DIR    record a trace to disk
    stepscope info MODEL|TRACE_DIR          architecture facts and parameter counts
    stepscope serve TRACE_DIR|--model M     the debugger in a browser (textual-serve)

Bad input prints one line on stderr and exits non-zero; set STEPSCOPE_DEBUG=1 for tracebacks.
"""

from __future__ import annotations

import argparse
import math
import os
import sys

from stepscope.tracer.inert import inert

EXIT_USAGE = 2
EXIT_INTERRUPTED = 130


class CliError(Exception):
    """A one-line message for stderr."""


# -- argument parsing ----------------------------------------------------------------------------
class DefaultsFormatter(argparse.HelpFormatter):
    """`--help` names every option's default: from its help text, else appended from the parser."""

    def _get_help_string(self, action):
        text = action.help or ""
        if "default" in text or action.default in (None, argparse.SUPPRESS) or action.required:
            return text
        if isinstance(action, (argparse._StoreTrueAction, argparse._StoreFalseAction)):
            return f"{text} (default: {'off' if action.default is False else 'on'})"
        return f"{text} (default: %(default)s)".strip()


class _SubParser(argparse.ArgumentParser):
    def __init__(self, *args, **kwargs):
        kwargs.setdefault("formatter_class", DefaultsFormatter)
        super().__init__(*args, **kwargs)


def _version() -> str:
    from stepscope.tracer import __version__

    return __version__


def _model_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("model")
    g.add_argument("--model", default=None, help="hub id, local model directory or .gguf file; `smollm2` or `SmolLM2-135M-Instruct` name the embedded model (default: the embedded SmolLM2-135M-Instruct, GGUF Q4_1 dequantised)")
    g.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    g.add_argument("--dtype", default="auto", choices=["auto", "float32", "float16", "bfloat16"], help="model dtype")
    g.add_argument("--device-map", default=None, choices=["auto"], help="spread a large model over devices with accelerate (default: one device)")


def _generation_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("generation")
    g.add_argument("--prompt", default=None, help='prompt text (default: "The capital of France is", as raw text)')
    g.add_argument("--max-new-tokens", type=int, default=16, help="tokens to generate")
    g.add_argument("--sample", action="store_true", help="sample instead of greedy decoding (default: greedy, or sampling when a sampling option is given)")
    g.add_argument("--greedy", action="store_true", help="greedy decoding even when sampling options are given (default: greedy)")
    g.add_argument("--temperature", type=float, default=None, help="sampling temperature (default: 1.0)")
    g.add_argument("--top-k", type=int, default=None, help="keep the k most likely tokens (default: off)")
    g.add_argument("--top-p", type=float, default=None, help="nucleus sampling mass (default: 1.0, off)")
    g.add_argument("--min-p", type=float, default=None, help="drop tokens below min-p times the top probability (default: 0, off)")
    g.add_argument("--seed", type=int, default=0, help="sampling seed")
    chat = g.add_mutually_exclusive_group()
    chat.add_argument("--chat", dest="chat", action="store_true", default=None, help="apply the chat template (default: on when the tokenizer is an instruct/chat tokenizer and --prompt is given)")
    chat.add_argument("--no-chat", dest="chat", action="store_false", help="raw text, no chat template (default: see --chat)")
    g.add_argument("--logit-lens-k", type=int, default=10, help="tokens kept per layer by the logit lens")
    g.add_argument("--no-logit-lens", dest="logit_lens", action="store_false", help="skip the per-layer logit lens, faster on a CPU (default: lens on)")
    g.add_argument("--record", default=None, help="comma-separated name patterns to record, e.g. 'blocks.*.attn.hook_pattern,logits' (default: every name)")
    g.add_argument("--store-dtype", default="auto", choices=["auto", "float32", "float16"], help="dtype of stored tensors (auto: float16 for float16 models, else float32)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="stepscope", description="Step through an LLM's generation, token by token.", formatter_class=DefaultsFormatter)
    parser.add_argument("--version", action="version", version=f"stepscope {_version()}")
    sub = parser.add_subparsers(dest="command", parser_class=_SubParser)
    t = sub.add_parser("trace", help="record a trace to disk")
    _model_options(t)
    _generation_options(t)
    t.add_argument("--out", required=True, help="trace directory to write (an existing trace there is replaced once the new one has its first step)")
    t.add_argument("--budget", default=None, help="disk budget for the trace, e.g. 8G or 500M (default: 8G; beyond it see docs/TRACE_FORMAT.md, Budget)")
    r = sub.add_parser("run", help="open the debugger on a live session")
    _model_options(r)
    _generation_options(r)
    r.add_argument("--out", default=None, help="also keep the trace in this directory (default: a temporary directory)")
    v = sub.add_parser("view", help="replay a saved trace")
    v.add_argument("trace_dir", help="trace directory (written by `stepscope trace` or `w` in the debugger)")
    v.add_argument("--branch", default=None, help="open the trace's branch NAME (b1, or b1/b2 for a branch of b1; a branch directory path works too) (default: the trace itself)")
    i = sub.add_parser("info", help="architecture facts and parameter counts of a model or a trace")
    i.add_argument("target", nargs="?", default=None, help="trace directory, config.json, model directory, .gguf file or hub id already in the local cache (default: the embedded SmolLM2-135M-Instruct)")
    _model_options_light(i)
    i.add_argument("--load", action="store_true", help="load the weights (slow) instead of reading the config alone")
    _serve_parser(sub)
    _diff_parser(sub)
    return parser


def _diff_parser(sub) -> None:
    d = sub.add_parser("diff", help="compare two traces of the same model (exit 0 identical, 1 different, 2 bad input)")
    d.add_argument("trace_a", help="first trace directory")
    d.add_argument("trace_b", help="second trace directory")
    d.add_argument("--top", type=int, default=3, help="how many of the most diverging layers to list")
    d.add_argument("--tensor", default=None, help="also show this tensor side by side (A, B, b−a), e.g. blocks.3.hook_resid_post (default: none)")
    d.add_argument("--step", type=int, default=0, help="the step of --tensor")
    d.add_argument("--text", action="store_true", help="print the text summary even on a terminal (default there: the app's Compare pane)")


def cmd_diff(args) -> int:
    """A compact text summary of the comparison; exit 0 identical, 1 different (bad input: 2, from main)."""
    from stepscope.tracer import load_trace
    from stepscope.tracer.diff import compare, summary, tensor_diff, tensor_summary

    a, b = load_trace(args.trace_a), load_trace(args.trace_b)
    if not args.text and sys.stdin.isatty() and sys.stdout.isatty():
        return _run_app(diff_app(a, b))
    result = compare(a, b)
    print(summary(result, max(0, args.top)))
    if args.tensor:
        print(tensor_summary(tensor_diff(a, b, args.step, args.tensor), args.tensor, args.step))
    return 0 if result.identical else 1


def diff_app(a, b):
    """The debugger on trace A with the Compare pane showing A against B (both models checked first)."""
    from stepscope.tracer.diff import check_same_model
    from stepscope.tui.app import StepscopeApp

    check_same_model(a, b)
    app = StepscopeApp(trace=a)
    app.main_screen.compare_with(b)
    return app


SERVE_ONLY = ("trace_dir", "host", "port", "public_url")


def _serve_parser(sub) -> None:
    s = sub.add_parser("serve", help="run the debugger in a browser (textual-serve)")
    s.add_argument("trace_dir", nargs="?", default=None, help="trace directory to replay (default: a live session from the model and generation options)")
    _model_options(s)
    _generation_options(s)
    g = s.add_argument_group("server")
    g.add_argument("--host", default="127.0.0.1", help="address to listen on; whoever can reach it can drive the debugger")
    g.add_argument("--port", type=int, default=8000, help="port to listen on")
    g.add_argument("--public-url", default=None, help="the URL browsers reach the server at, e.g. behind a proxy (default: http://HOST:PORT)")
    s.set_defaults(_parser=s)


def _model_options_light(p: argparse.ArgumentParser) -> None:
    p.add_argument("--device", default="cpu", help="device for --load")
    p.add_argument("--dtype", default="auto", choices=["auto", "float32", "float16", "bfloat16"], help="dtype for --load")


def generation_settings(args):
    from stepscope.tracer.session import GenerationSettings

    validate_args(args)
    sampling_knobs = [args.temperature, args.top_k, args.top_p, args.min_p]
    do_sample = args.sample or (not args.greedy and any(v is not None for v in sampling_knobs))
    settings = GenerationSettings(
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


def _quiet_transformers() -> None:
    import warnings

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


# -- commands ------------------------------------------------------------------------------------
def cmd_trace(args) -> int:
    from rich.console import Console
    from rich.markup import escape
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from stepscope.tracer.trace_format import human_bytes

    console = Console(stderr=True)
    settings = generation_settings(args)
    args.out_state = _check_out_dir(args.out)
    _quiet_transformers()
    from stepscope.tracer.estimate import step_bytes

    columns = [TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn()]
    with Progress(*columns, console=console, transient=False) as progress:
        load = progress.add_task("loading model", total=100)

        def on_load(stage, fraction):  # stages name user paths: never markup
            progress.update(load, description=escape(inert(stage)), completed=int(100 * (fraction or 0)))

        session = open_session(args, settings, progress=on_load, background_writer="auto")
        progress.update(load, completed=100, description=escape(inert(f"loaded {session.name}")))
        facts = session.trace.model
        itemsize = 2 if session.store_dtype.itemsize == 2 else 4
        p = len(session.prompt_ids)
        prefill = step_bytes(session.adapter, facts, session.keep, p, p, itemsize, settings.logit_lens_k)
        decode = step_bytes(session.adapter, facts, session.keep, 1, p + 1, itemsize, settings.logit_lens_k)
        console.print(
            f"prompt {p} tokens; estimated {human_bytes(prefill)} for the prefill step, "
            f"about {human_bytes(decode)} per decode step ({session.trace.manifest['dtype']['stored']})",
            markup=False,
            highlight=False,
        )
        _enforce_budget(args, session, settings, itemsize, console)
        gen = progress.add_task("generating", total=session.max_new_tokens)
        try:
            session.run(on_step=lambda n: progress.update(gen, completed=n))
        except KeyboardInterrupt:
            kept = session.writer.steps_written
            console.print(f"interrupted: {inert(args.out)} keeps its {kept} complete steps", markup=False, highlight=False)
            return EXIT_INTERRUPTED
    from stepscope.tracer import load_trace

    tr = load_trace(args.out)
    text = "".join(t["text"] for t in tr.tokens[tr.prompt_len :])
    out = Console()
    out.print(f"trace: {inert(os.path.abspath(args.out))}", markup=False, highlight=False)
    out.print(f"steps: {len(tr.steps)}  size: {human_bytes(tr.nbytes)}  stop: {inert(tr.manifest['stop_reason'])}", markup=False, highlight=False)
    out.print(f"generated: {inert(repr(text))}", markup=False, highlight=False)
    return 0


def open_session(args, settings, progress=None, background_writer=False):
    """A LiveSession from the model and generation options of `trace` and `run`."""
    if args.chat is None and args.prompt is None:
        settings.chat = False  # the default prompt is a completion prompt, not a chat turn
    try:
        return _open_live_session(args, settings, progress, background_writer)
    except (CliError, KeyboardInterrupt):
        raise
    except Exception as exc:  # a damaged model file: one line naming the model, not parser internals
        if type(exc).__module__.startswith("stepscope.tracer") or type(exc).__name__ in ("PromptError", "ModelLoadError", "UnsupportedModel"):
            raise
        import struct

        if isinstance(exc, (struct.error, EOFError, UnicodeDecodeError, IndexError, KeyError, OverflowError, MemoryError)):
            raise CliError(f"cannot load model {inert(args.model or 'smollm2')}: the file is damaged or not a model stepscope reads ({type(exc).__module__}.{type(exc).__name__})") from None
        raise


def _open_live_session(args, settings, progress, background_writer):
    from stepscope.tracer.session import DEFAULT_PROMPT, LiveSession

    return LiveSession.open(
        args.model,
        prompt=DEFAULT_PROMPT if args.prompt is None else args.prompt,
        settings=settings,
        out=args.out,
        device=args.device,
        dtype=args.dtype,
        device_map=args.device_map,
        record=record_patterns(args.record),
        store_dtype=args.store_dtype,
        progress=progress,
        background_writer=background_writer,
    )


# -- argument validation (every value checked before anything is loaded or written) -------------
MAX_SEED = 2**63 - 1


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
    if getattr(args, "out", None) is not None and ("\0" in args.out or not args.out.strip()):
        raise CliError("--out is not a usable path")
    if getattr(args, "budget", None) is not None:
        from stepscope.tracer.budget import parse_size

        try:
            parse_size(args.budget)
        except ValueError as exc:
            raise CliError(inert(str(exc))) from None
    record_patterns(args.record)


def record_patterns(spec: str | None) -> list[str] | None:
    """--record's patterns; CliError when given but empty or when one matches no recordable name."""
    if spec is None:
        return None
    from stepscope.tracer.names import BLOCK_NAMES, FINAL_NAMES, HEAD_NAMES, SAMPLING_NAMES

    patterns = [p.strip() for p in spec.split(",") if p.strip()]
    valid = "valid patterns name recorded tensors, e.g. blocks.*.attn.hook_pattern, blocks.3.hook_resid_post, *hook_z, logits"
    if not patterns:
        raise CliError(f"--record {inert(spec, 60)!s} holds no pattern; {valid}")
    import fnmatch

    vocabulary = [*HEAD_NAMES, *FINAL_NAMES, *SAMPLING_NAMES] + [f"blocks.{i}.{n}" for i in range(1024) for n in BLOCK_NAMES]
    for p in patterns:
        if not fnmatch.filter(vocabulary, p):
            raise CliError(f"--record pattern {inert(p, 80)} matches no recordable name; {valid}")
    return patterns


def _enforce_budget(args, session, settings, itemsize: int, console) -> None:
    """Apply the recording budget (tracer/budget.py): trim prefill attention rows or refuse."""
    from stepscope.tracer.budget import DEFAULT_BUDGET, is_attention_map, parse_size, plan
    from stepscope.tracer.estimate import recorded_names, step_bytes
    from stepscope.tracer.names import block_name
    from stepscope.tracer.trace_format import human_bytes

    budget = parse_size(args.budget) if args.budget else DEFAULT_BUDGET
    facts, keep = session.trace.model, session.keep
    names = [n for n in recorded_names(session.adapter) if keep(n)]
    maps = [n for n in names if is_attention_map(n)]
    heads = facts["n_heads"]
    layers = range(facts["n_layers"])
    can_trim = all(keep(block_name(i, "attn.hook_rot_q")) and keep(block_name(i, "attn.hook_rot_k")) for i in layers) and not facts.get("attention_sink")
    result = plan(
        lambda t, s: step_bytes(session.adapter, facts, keep, t, s, itemsize, settings.logit_lens_k),
        lambda t, s: len(maps) * heads * t * s * itemsize,
        len(session.prompt_ids), session.max_new_tokens, budget, can_trim,
    )
    if not result.fits:
        session.close("error")
        if getattr(args, "out_state", None) == "new":  # the directory this run created: nothing of value
            import shutil

            shutil.rmtree(args.out, ignore_errors=True)
        raise CliError(f"the trace would take about {human_bytes(result.total_bytes)}, over the budget of {human_bytes(budget)}; {result.advice}")
    if result.row_limit:
        session.recorder.row_limit = result.row_limit
        console.print(
            f"budget {human_bytes(budget)}: the prefill's attention maps keep their last {result.row_limit} query rows "
            f"(the others are recomputed from hook_rot_q/hook_rot_k when viewed); about {human_bytes(result.total_bytes)} "
            f"instead of {human_bytes(result.full_bytes)}",
            markup=False, highlight=False,
        )
    else:
        console.print(f"estimated trace size {human_bytes(result.total_bytes)} (budget {human_bytes(budget)})", markup=False, highlight=False)


def _check_out_dir(path: str) -> str:
    """"new" or "trace" (replaced only once the new run has a step); TraceWriteError for a
    directory holding anything else. Touches nothing."""
    from stepscope.tracer.writer import out_dir_state

    return out_dir_state(path)


def cmd_info(args) -> int:
    from rich.console import Console

    from stepscope.tui.config_view import config_extras
    from stepscope.tui.info_view import model_table, trace_summary

    console = Console()
    target = args.target
    if target and os.path.lexists(os.path.join(target, "manifest.json")):  # a trace, even a hostile one: load_trace judges it
        from stepscope.tracer import load_trace

        tr = load_trace(target)
        console.print(trace_summary(tr))
        console.print(model_table(tr.model))
        console.print(config_extras(tr.model))  # where the weights came from
        _print_branches(console, tr.path)
        return 0

    if not args.load:
        facts = _config_facts(target)
        console.print(model_table(facts))
        console.print(config_extras(facts))
        return 0
    _quiet_transformers()
    from stepscope.tracer.adapters.registry import adapter_for
    from stepscope.tracer.loading import load_model
    from stepscope.tracer.model_info import model_facts

    loaded = load_model(target, device=args.device, dtype=args.dtype)
    facts = model_facts(loaded.model, adapter_for(loaded.model), loaded.name, loaded.source)
    console.print(model_table(facts))
    console.print(config_extras(facts))
    return 0


def _config_facts(target: str | None) -> dict:
    """`info` without weights: facts from a config.json, a model directory, a .gguf header or a cached hub id."""
    from stepscope.tracer.config_facts import config_facts, read_config
    from stepscope.tracer.loading import default_alias, default_gguf_path

    if target is None or default_alias(target):
        name, target = "SmolLM2-135M-Instruct", default_gguf_path()
        config, _, weights = read_config(target)
    else:
        config, name, weights = read_config(target)
    facts = config_facts(config, name, target)
    facts["weights"] = weights
    if os.path.isdir(target):
        from stepscope.tracer.config_facts import checkpoint_params

        facts["checkpoint_params"] = checkpoint_params(target)
    return facts


def cmd_view(args) -> int:
    from stepscope.tracer import load_trace

    trace = load_trace(_branch_dir(args.trace_dir, args.branch))
    if len(trace.steps):
        trace.steps[0].names  # the step the app opens on: a corrupted one is one line here
    _check_terminal()
    from stepscope.tui.app import StepscopeApp

    return _run_app(StepscopeApp(trace=trace))


def _print_branches(console, trace_dir: str) -> None:
    """The trace's branches (tracer/branch.py), one inert line each."""
    from rich.text import Text

    from stepscope.tracer.branch import describe, list_branches

    items = list_branches(trace_dir)
    if items:
        console.print(Text(f"branches ({len(items)}; stepscope view {trace_dir} --branch NAME)"))
        for item in items:
            console.print(Text("  " + describe(item)))


def _branch_dir(trace_dir: str, branch: str | None) -> str:
    """The directory of `--branch NAME` of a trace (tracer/branch.py), or the trace itself."""
    if branch is None:
        return trace_dir
    from stepscope.tracer.branch import branch_path, list_branches

    path = branch_path(trace_dir, branch)
    if not os.path.isdir(path):
        names = ", ".join(b["name"] for b in list_branches(trace_dir)) or "none"
        raise CliError(f"{trace_dir} has no branch {branch!r} (branches: {names})")
    return path


def cmd_run(args) -> int:
    app = live_app(args)
    _check_terminal()
    return _run_app(app)


def live_app(args):
    """The debugger on a live session from `run`'s options, every option checked first."""
    settings = generation_settings(args)
    _check_model_options(args)
    if args.out:
        _check_out_dir(args.out)

    def factory(progress=None):
        _quiet_transformers()
        return open_session(args, settings, progress=progress)

    from stepscope.tui.app import StepscopeApp

    return StepscopeApp(session_factory=factory)


def _check_model_options(args) -> None:
    """Refuse what loading the model would refuse at once (device, dtype, a missing model path),
    before the app starts, with the same one-line messages as `trace`."""
    from stepscope.tracer.loading import ModelLoadError, resolve_device, resolve_dtype

    resolve_device(args.device)
    resolve_dtype(args.dtype)
    spec = args.model
    if spec and spec.endswith(".gguf") and not os.path.isfile(spec):
        raise ModelLoadError(f"no such GGUF file: {spec}")
    if spec and not spec.endswith(".gguf") and not os.path.isdir(spec) and spec.startswith((".", "/", "~")):
        raise ModelLoadError(f"no such model directory: {spec}")


def _check_terminal() -> None:
    """The debugger draws on a terminal: without one it would wait forever (under `stepscope serve`
    textual-serve's web driver draws in the browser instead: no TTY needed)."""
    if os.environ.get("TEXTUAL_DRIVER", "").endswith(":WebDriver"):
        return
    if not (sys.stdin.isatty() and sys.stdout.isatty()):
        raise CliError("the debugger needs a terminal (stdin and stdout are not a TTY); "
                       "`stepscope trace` records without one")


def _run_app(app) -> int:
    """Run the app; an uncaught exception inside it is one line and a non-zero exit, never 0."""

    app.run()
    if app.crash is not None:
        print(inert(f"stepscope: internal error: {type(app.crash).__name__}: {app.crash}", newlines=True).splitlines()[0]
              + " (STEPSCOPE_DEBUG=1 shows the traceback)", file=sys.stderr)
        return 1
    return app.return_code or 0


def parse_args(argv: list[str]) -> argparse.Namespace:
    """Parse a command line; bare `stepscope [options]` is `stepscope run [options]`."""
    argv = list(argv)
    if not argv or (argv[0].startswith("-") and argv[0] not in ("-h", "--help", "--version")):
        argv = ["run", *argv]  # bare `stepscope [options]` opens the debugger
    return build_parser().parse_args(argv)


def cmd_serve(args) -> int:
    if args.trace_dir is not None:
        from stepscope.tracer import load_trace

        trace = load_trace(args.trace_dir)  # a bad trace is one line here, not in every browser tab
        if len(trace.steps):
            trace.steps[0].names
        app_argv = ["view", os.path.abspath(args.trace_dir)]
    else:
        generation_settings(args)  # invalid settings are one line here
        app_argv = ["run", *_forwarded_options(args)]
    if not 0 < args.port < 65536:
        raise CliError(f"--port must be in 1..65535 (got {args.port})")
    from stepscope.tui.serve import serve

    try:
        import textual_serve  # noqa: F401
    except ImportError:
        raise CliError("stepscope serve needs textual-serve: pip install textual-serve") from None
    serve(app_argv, host=args.host, port=args.port, public_url=args.public_url)
    return 0


def _forwarded_options(args) -> list[str]:
    """The model and generation options given to `serve`, as `run` arguments for each browser tab."""
    out: list[str] = []
    for action in args._parser._actions:
        if not action.option_strings or action.dest in SERVE_ONLY or action.dest == "help":
            continue
        value = getattr(args, action.dest, action.default)
        if value == action.default:
            continue
        if action.nargs == 0:  # a flag: emitted when it set the value (--chat / --no-chat share a dest)
            if value == action.const:
                out.append(action.option_strings[0])
        else:
            out += [action.option_strings[0], str(value)]
    return out


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    for i, arg in enumerate(argv):
        try:
            arg.encode("utf-8")
        except UnicodeEncodeError:  # undecodable bytes arrive as lone surrogates
            print(f"stepscope: argument {i + 1} is not valid UTF-8: {inert(arg)}", file=sys.stderr)
            return EXIT_USAGE
    args = parse_args(argv)
    handlers = {"trace": cmd_trace, "info": cmd_info, "view": cmd_view, "run": cmd_run, "serve": cmd_serve, "diff": cmd_diff}
    try:
        return handlers[args.command](args)
    except KeyboardInterrupt:
        print("stepscope: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except Exception as exc:  # every failure is one line unless debugging
        if os.environ.get("STEPSCOPE_DEBUG"):
            raise
        print(f"stepscope: {inert(_one_line(exc), 500)}", file=sys.stderr)
        return EXIT_USAGE if _is_user_error(exc) else 1


def _is_user_error(exc: Exception) -> bool:
    from stepscope.tracer.trace_format import TraceError

    names = {c.__name__ for c in type(exc).__mro__}
    return isinstance(exc, (CliError, TraceError, ValueError, FileNotFoundError)) or bool(
        names & {"ModelLoadError", "UnsupportedModel", "PromptError"}
    )


def _one_line(exc: Exception) -> str:
    text = str(exc).strip().splitlines()
    msg = text[0] if text else exc.__class__.__name__
    if isinstance(exc, (CliError,)) or type(exc).__module__.startswith("stepscope.tracer"):
        return msg
    return f"{exc.__class__.__name__}: {msg}"


if __name__ == "__main__":
    sys.exit(main())
