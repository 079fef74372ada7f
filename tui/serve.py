"""`stepscope serve`: the same debugger in a browser, through textual-serve.

Each browser tab gets its own debugger process (`stepscope view TRACE` or `stepscope run ...`),
whose terminal output textual-serve streams to an xterm.js terminal in the page. The server
listens on localhost unless told otherwise: whoever can reach the port can drive the debugger
(and, for `--model`, run the model).
"""

from __future__ import annotations

import shlex
import sys


def app_command(app_argv: list[str]) -> str:
    """The shell command textual-serve runs per browser tab: this Python, this CLI, these arguments."""
    return shlex.join([sys.executable, "-m", "stepscope", *app_argv])


def serve(app_argv: list[str], host: str = "127.0.0.1", port: int = 8000, public_url: str | None = None) -> None:
    """Serve the debugger started with `app_argv` (e.g. ["view", TRACE]) until Ctrl+C."""
    try:
        from textual_serve.server import Server
    except ImportError:
        raise RuntimeError("stepscope serve needs textual-serve: pip install textual-serve") from None
    title = "stepscope " + " ".join(app_argv[:2])
    Server(app_command(app_argv), host=host, port=port, title=title, public_url=public_url).serve()
