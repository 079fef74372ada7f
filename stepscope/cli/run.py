"""`stepscope run` (and bare `stepscope`): the debugger on a live session.

Under `--tensor-parallel` (torchrun) rank 0 runs the debugger and every other rank follows it: it
prints nothing and makes each of rank 0's calls that run the model on its own shard
(tracer/tp_follow.py); every rank exits with rank 0's status."""

from __future__ import annotations

import os
import sys

from stepscope import seam
from stepscope.cli.common import (
    EXIT_INTERNAL,
    EXIT_USAGE,
    check_model_options,
    check_terminal,
    exit_status,
    generation_options,
    generation_settings,
    is_user_error,
    model_options,
    open_session,
    parallel_options,
    rank,
    run_app,
)
from stepscope.tracer.inert import inert
from stepscope.tui.app import StepscopeApp


def add_parser(sub) -> None:
    r = sub.add_parser("run", help="open the debugger on a live session")
    model_options(r)
    generation_options(r)
    parallel_options(r)
    r.add_argument("--out", default=None, help="also keep the trace in this directory (default: a temporary directory)")


def live_app(args, leader=None) -> StepscopeApp:
    """The debugger on a live session from `run`'s options, every option checked first. `leader`
    (`seam.tensor_parallel_leader()`): the session is opened and driven on every rank through it, and
    a failure of the ranks ends the app."""
    settings = generation_settings(args)
    check_model_options(args)
    if args.out:
        seam.check_out_dir(args.out)

    def factory(progress=None):
        seam.quiet_transformers()
        if leader is not None:
            return leader.open(lambda: open_session(args, settings, progress=progress))
        return open_session(args, settings, progress=progress)

    app = StepscopeApp(session_factory=factory)
    if leader is not None:
        leader.on_failure = lambda message: app.exit(return_code=EXIT_INTERNAL)
    return app


def finish(app: StepscopeApp, leader) -> int:
    """Rank 0's exit status once its debugger has ended (a failure of the ranks: its one line and 1),
    sent to the other ranks, which exit with it."""
    if leader.failure is not None:
        print(f"stepscope: {inert(leader.failure, 500)}", file=sys.stderr)
        code = EXIT_INTERNAL
    else:
        code = exit_status(app)
    try:
        leader.end(code)
    except Exception:  # noqa: BLE001 - the other ranks are gone already: nothing to tell them
        pass
    return code


def follow(args) -> int:
    """A rank other than 0: nothing on the terminal (rank 0's debugger draws there), rank 0's calls made
    on this rank's shard until rank 0 ends; rank 0's exit status."""
    if not os.environ.get("STEPSCOPE_DEBUG"):
        devnull = os.open(os.devnull, os.O_WRONLY)
        for fd in (1, 2):
            os.dup2(devnull, fd)
        os.close(devnull)
    settings = generation_settings(args)
    check_model_options(args)
    seam.quiet_transformers()
    return seam.follow_leader(lambda: open_session(args, settings))


def run(args) -> int:
    if getattr(args, "tensor_parallel", False):
        if rank(args):
            return follow(args)
        leader = seam.tensor_parallel_leader()
        leader.join()  # the other ranks wait for rank 0 there: a refusal below ends them too
        try:
            app = live_app(args, leader)
            check_terminal()
        except Exception as exc:
            leader.end(EXIT_USAGE if is_user_error(exc) else EXIT_INTERNAL)
            raise
        app.run()
        return finish(app, leader)
    app = live_app(args)
    check_terminal()
    return run_app(app)
