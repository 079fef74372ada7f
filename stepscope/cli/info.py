"""`stepscope info`: architecture facts and parameter counts of a model or a trace."""

from __future__ import annotations

import os

from rich.console import Console
from rich.text import Text

from stepscope import seam
from stepscope.cli.common import EXIT_OK
from stepscope.tracer import load_trace
from stepscope.tracer.branch_layout import describe, list_branches
from stepscope.tracer.config_facts import checkpoint_params, config_facts, read_config
from stepscope.tracer.model_spec import DEFAULT_NAME, default_alias, default_gguf_path
from stepscope.tui.config_view import config_extras
from stepscope.tui.info_view import model_table, trace_summary


def add_parser(sub) -> None:
    i = sub.add_parser("info", help="architecture facts and parameter counts of a model or a trace")
    i.add_argument("target", nargs="?", default=None, help="trace directory, config.json, model directory, .gguf file or hub id already in the local cache (default: the embedded SmolLM2-135M-Instruct)")
    i.add_argument("--device", default="cpu", help="device for --load")
    i.add_argument("--dtype", default="auto", choices=["auto", "float32", "float16", "bfloat16"], help="dtype for --load")
    i.add_argument("--load", action="store_true", help="load the weights (slow) instead of reading the config alone")


def run(args) -> int:
    console = Console()
    target = args.target
    if target and os.path.lexists(os.path.join(target, "manifest.json")):  # a trace, even a hostile one: load_trace judges it
        tr = load_trace(target)
        console.print(trace_summary(tr))
        console.print(model_table(tr.model))
        console.print(config_extras(tr.model))  # where the weights came from
        print_branches(console, tr.path)
        return EXIT_OK
    if args.load:
        seam.quiet_transformers()
        facts = seam.loaded_model_facts(target, device=args.device, dtype=args.dtype)
    else:
        facts = config_only_facts(target)
    console.print(model_table(facts))
    console.print(config_extras(facts))
    return EXIT_OK


def config_only_facts(target: str | None) -> dict:
    """`info` without weights: facts from a config.json, a model directory, a .gguf header or a cached hub id."""
    if target is None or default_alias(target):
        name, target = DEFAULT_NAME, default_gguf_path()
        config, _, weights = read_config(target)
    else:
        config, name, weights = read_config(target)
    facts = config_facts(config, name, target)
    facts["weights"] = weights
    if os.path.isdir(target):
        facts["checkpoint_params"] = checkpoint_params(target)
    return facts


def print_branches(console: Console, trace_dir: str) -> None:
    """The trace's branches (tracer/branch.py), one inert line each."""
    items = list_branches(trace_dir)
    if items:
        console.print(Text(f"branches ({len(items)}; stepscope view {trace_dir} --branch NAME)"))
        for item in items:
            console.print(Text("  " + describe(item)))
