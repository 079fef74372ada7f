"""`stepscope diff`: compare two traces of the same model (exit 0 identical, 1 different, 2 bad input)."""

from __future__ import annotations

import sys

from stepscope.cli.common import EXIT_INTERNAL, EXIT_OK, CliError, run_app
from stepscope.tracer import load_trace
from stepscope.tracer.diff import check_same_model, compare, summary, tensor_diff, tensor_summary
from stepscope.tui.app import StepscopeApp

EXIT_DIFFERENT = EXIT_INTERNAL  # like diff(1): 1 means the inputs differ


def add_parser(sub) -> None:
    d = sub.add_parser("diff", help="compare two traces of the same model (exit 0 identical, 1 different, 2 bad input)")
    d.add_argument("trace_a", help="first trace directory")
    d.add_argument("trace_b", help="second trace directory")
    d.add_argument("--top", type=int, default=3, help="how many of the most diverging layers to list")
    d.add_argument("--tensor", default=None, help="also show this tensor side by side (A, B, b−a), e.g. blocks.3.hook_resid_post (default: none)")
    d.add_argument("--step", type=int, default=0, help="the step of --tensor")
    d.add_argument("--text", action="store_true", help="print the text summary even on a terminal (default there: the app's Compare pane)")


def diff_app(a, b) -> StepscopeApp:
    """The debugger on trace A with the Compare pane showing A against B (both models checked first)."""
    check_same_model(a, b)
    app = StepscopeApp(trace=a)
    app.main_screen.compare_with(b)
    return app


def run(args) -> int:
    """A compact text summary of the comparison; exit 0 identical, 1 different (bad input: 2, from main)."""
    if args.top < 0:
        raise CliError(f"--top: expected 0 or more layers, got {args.top}")
    a, b = load_trace(args.trace_a), load_trace(args.trace_b)
    if not args.text and sys.stdin.isatty() and sys.stdout.isatty():
        return run_app(diff_app(a, b))
    result = compare(a, b)
    print(summary(result, args.top))
    if args.tensor:
        print(tensor_summary(tensor_diff(a, b, args.step, args.tensor), args.tensor, args.step))
    return EXIT_OK if result.identical else EXIT_DIFFERENT
