"""The `stepscope` command line.

    stepscope                               the debugger on the embedded SmolLM2, default prompt
    stepscope run --model M --prompt P      the debugger on a live session
    stepscope view TRACE_DIR                replay a saved trace (no torch needed)
    stepscope trace --prompt P --out DIR    record a trace to disk
    stepscope info MODEL|TRACE_DIR          architecture facts and parameter counts
    stepscope diff TRACE_A TRACE_B          compare two traces of the same model
    stepscope serve TRACE_DIR|--model M     the debugger in a browser (textual-serve)
    stepscope patch CLEAN CORRUPT           activation patching: where the clean answer is computed

Bad input prints one line on stderr and exits 2; Ctrl-C exits 130 (SIGTERM 143); an internal error is
one line and exit 1. Set STEPSCOPE_DEBUG=1 for tracebacks.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys

from stepscope.cli import diff, info, patch, run, serve, trace, view
from stepscope.cli.common import (
    EXIT_INTERNAL,
    EXIT_INTERRUPTED,
    EXIT_TERMINATED,
    EXIT_USAGE,
    CliError,
    DefaultsFormatter,
    SubParser,
    is_user_error,
)
from stepscope.tracer import __version__
from stepscope.tracer.inert import inert
from stepscope.tracer.scratch import remove_owned, remove_stale_live_dirs

COMMANDS = {"trace": trace, "run": run, "view": view, "info": info, "serve": serve, "diff": diff, "patch": patch}  # parser order


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="stepscope", description="Step through an LLM's generation, token by token.", formatter_class=DefaultsFormatter)
    parser.add_argument("--version", action="version", version=f"stepscope {__version__}")
    sub = parser.add_subparsers(dest="command", parser_class=SubParser)
    for module in COMMANDS.values():
        module.add_parser(sub)
    return parser


def parse_args(argv: list[str]) -> argparse.Namespace:
    """Parse a command line; bare `stepscope [options]` is `stepscope run [options]`."""
    argv = list(argv)
    if not argv or (argv[0].startswith("-") and argv[0] not in ("-h", "--help", "--version")):
        argv = ["run", *argv]  # bare `stepscope` opens the debugger
    return build_parser().parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    for i, arg in enumerate(argv):
        try:
            arg.encode("utf-8")
        except UnicodeEncodeError:  # undecodable bytes arrive as lone surrogates
            print(f"stepscope: argument {i + 1} is not valid UTF-8: {inert(arg)}", file=sys.stderr)
            return EXIT_USAGE
    args = parse_args(argv)
    previous = signal.signal(signal.SIGTERM, terminated)
    try:
        remove_stale_live_dirs()  # the temporary directories of killed runs (tracer/scratch.py)
        return COMMANDS[args.command].run(args)
    except KeyboardInterrupt:
        print("stepscope: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except Exception as exc:  # every failure is one line unless debugging
        if os.environ.get("STEPSCOPE_DEBUG"):
            raise
        print(f"stepscope: {inert(one_line(exc), 500)}", file=sys.stderr)
        return EXIT_USAGE if is_user_error(exc) else EXIT_INTERNAL
    finally:
        signal.signal(signal.SIGTERM, previous)
        remove_owned()  # this run's temporary live directories, on every exit path


def terminated(signum, frame):
    """SIGTERM ends the run like an exception: `finally` blocks run and temporary directories go."""
    raise SystemExit(EXIT_TERMINATED)


def one_line(exc: Exception) -> str:
    text = str(exc).strip().splitlines()
    msg = text[0] if text else exc.__class__.__name__
    if isinstance(exc, CliError) or type(exc).__module__.startswith("stepscope.tracer"):
        return msg
    return f"{exc.__class__.__name__}: {msg}"


if __name__ == "__main__":
    sys.exit(main())
