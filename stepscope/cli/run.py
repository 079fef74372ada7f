"""`stepscope run` (and bare `stepscope`): the debugger on a live session."""

from __future__ import annotations

from stepscope import seam
from stepscope.cli.common import (
    check_model_options,
    check_terminal,
    generation_options,
    generation_settings,
    model_options,
    open_session,
    run_app,
)
from stepscope.tui.app import StepscopeApp


def add_parser(sub) -> None:
    r = sub.add_parser("run", help="open the debugger on a live session")
    model_options(r)
    generation_options(r)
    r.add_argument("--out", default=None, help="also keep the trace in this directory (default: a temporary directory)")


def live_app(args) -> StepscopeApp:
    """The debugger on a live session from `run`'s options, every option checked first."""
    settings = generation_settings(args)
    check_model_options(args)
    if args.out:
        seam.check_out_dir(args.out)

    def factory(progress=None):
        seam.quiet_transformers()
        return open_session(args, settings, progress=progress)

    return StepscopeApp(session_factory=factory)


def run(args) -> int:
    app = live_app(args)
    check_terminal()
    return run_app(app)
