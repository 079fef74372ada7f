"""`stepscope view`: replay a saved trace (numpy only: no torch is imported)."""

from __future__ import annotations

import os

from stepscope.cli.common import CliError, check_terminal, run_app
from stepscope.tracer import load_trace
from stepscope.tracer.branch_layout import branch_path, list_branches
from stepscope.tui.app import StepscopeApp


def add_parser(sub) -> None:
    v = sub.add_parser("view", help="replay a saved trace")
    v.add_argument("trace_dir", help="trace directory (written by `stepscope trace` or `w` in the debugger)")
    v.add_argument("--branch", default=None, help="open the trace's branch NAME (b1, or b1/b2 for a branch of b1; a branch directory path works too) (default: the trace itself)")


def branch_dir(trace_dir: str, branch: str | None) -> str:
    """The directory of `--branch NAME` of a trace (tracer/branch.py), or the trace itself."""
    if branch is None:
        return trace_dir
    path = branch_path(trace_dir, branch)
    if not os.path.isdir(path):
        names = ", ".join(b["name"] for b in list_branches(trace_dir)) or "none"
        raise CliError(f"{trace_dir} has no branch {branch!r} (branches: {names})")
    return path


def run(args) -> int:
    trace = load_trace(branch_dir(args.trace_dir, args.branch))
    if len(trace.steps):
        _ = trace.steps[0].names  # the step the app opens on: a corrupted one is one line here
    check_terminal()
    return run_app(StepscopeApp(trace=trace))
