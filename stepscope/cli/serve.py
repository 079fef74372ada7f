"""`stepscope serve`: the same debugger in a browser, through textual-serve.

Each browser tab gets its own debugger process (`stepscope view TRACE` or `stepscope run ...`),
whose terminal output textual-serve streams to an xterm.js terminal in the page. The server
listens on localhost unless told otherwise: whoever can reach the port can drive the debugger
(and, for `--model`, run the model).
"""

from __future__ import annotations

import os
import shlex
import sys

from stepscope import seam
from stepscope.cli.common import (
    EXIT_INTERRUPTED,
    EXIT_OK,
    CliError,
    check_model_options,
    generation_options,
    generation_settings,
    model_options,
)
from stepscope.tracer import load_trace


def add_parser(sub) -> None:
    s = sub.add_parser("serve", help="run the debugger in a browser (textual-serve)")
    s.add_argument("trace_dir", nargs="?", default=None, help="trace directory to replay (default: a live session from the model and generation options)")
    forwarded = model_options(s) + generation_options(s)
    g = s.add_argument_group("server")
    g.add_argument("--host", default="127.0.0.1", help="address to listen on; whoever can reach it can drive the debugger")
    g.add_argument("--port", type=int, default=8000, help="port to listen on")
    g.add_argument("--public-url", default=None, help="the URL browsers reach the server at, e.g. behind a proxy (default: http://HOST:PORT)")
    s.set_defaults(forwarded_actions=forwarded)


def app_command(app_argv: list[str]) -> str:
    """The shell command textual-serve runs per browser tab: this Python, this CLI, these arguments."""
    return shlex.join([sys.executable, "-m", "stepscope", *app_argv])


def serve(app_argv: list[str], host: str = "127.0.0.1", port: int = 8000, public_url: str | None = None) -> bool:
    """Serve the debugger started with `app_argv` (e.g. ["view", TRACE]) until Ctrl+C or SIGTERM;
    True when a signal stopped it."""
    title = "stepscope " + " ".join(app_argv[:2])
    try:
        return seam.serve_command(app_command(app_argv), host=host, port=port, title=title, public_url=public_url)
    except ImportError:
        raise CliError("stepscope serve needs textual-serve: pip install textual-serve") from None


def forwarded_options(args) -> list[str]:
    """The model and generation options given to `serve`, as `run` arguments for each browser tab."""
    out: list[str] = []
    for action in args.forwarded_actions:
        value = getattr(args, action.dest, action.default)
        if value == action.default:
            continue
        if action.nargs == 0:  # a flag: emitted when it set the value (--chat / --no-chat share a dest)
            if value == action.const:
                out.append(action.option_strings[0])
        else:
            out += [action.option_strings[0], str(value)]
    return out


def run(args) -> int:
    if args.trace_dir is not None:
        trace = load_trace(args.trace_dir)  # a bad trace is one line here, not in every browser tab
        if len(trace.steps):
            _ = trace.steps[0].names
        app_argv = ["view", os.path.abspath(args.trace_dir)]
    else:
        generation_settings(args)  # invalid settings are one line here
        check_model_options(args)  # so is a model no browser tab could load
        app_argv = ["run", *forwarded_options(args)]
    if not 0 < args.port < 65536:
        raise CliError(f"--port must be in 1..65535 (got {args.port})")
    stopped = serve(app_argv, host=args.host, port=args.port, public_url=args.public_url)
    return EXIT_INTERRUPTED if stopped else EXIT_OK
