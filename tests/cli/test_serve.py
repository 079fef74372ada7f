"""`stepscope serve`: a real headless Chromium opens the page and receives the debugger's first screen.

Skips cleanly when no Chromium is installed (`apt-get install chromium`) or textual-serve is missing.
The browser is driven over the Chrome DevTools Protocol with aiohttp (a textual-serve dependency).
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time

import pytest

from stepscope.cli.main import main
from tests.support.paths import FIXTURE, ROOT

CHROMIUM = next((shutil.which(n) for n in ("chromium", "chromium-browser", "google-chrome") if shutil.which(n)), None)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_http(url: str, seconds: float) -> dict | list | None:
    import urllib.request

    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=1) as r:
                body = r.read()
            return json.loads(body) if url.endswith(("/json/list", "/json/version")) else {}
        except (OSError, ValueError):
            time.sleep(0.2)
    return None


async def _browse(devtools_port: int, page_url: str, wanted: list[str], seconds: float) -> tuple[str, str, bytes]:
    """Open `page_url` in the browser's page; return (terminal text received, body classes, a PNG screenshot)."""
    import aiohttp

    targets = _wait_http(f"http://127.0.0.1:{devtools_port}/json/list", 20)
    page = next(t for t in targets if t.get("type") == "page")
    received: list[str] = []
    async with aiohttp.ClientSession() as http, http.ws_connect(page["webSocketDebuggerUrl"], max_msg_size=0) as ws:
        ids = iter(range(1, 10**6))
        replies: dict[int, dict] = {}

        async def call(method, **params):
            i = next(ids)
            await ws.send_json({"id": i, "method": method, "params": params})
            while i not in replies:
                await pump(5)
            return replies.pop(i)

        async def pump(timeout):
            msg = await ws.receive(timeout=timeout)
            data = json.loads(msg.data)
            if "id" in data:
                replies[data["id"]] = data.get("result", {})
            elif data.get("method") == "Network.webSocketFrameReceived":
                frame = data["params"]["response"]
                payload = frame["payloadData"]
                received.append(base64.b64decode(payload).decode("utf-8", "replace") if frame.get("opcode") == 2 else payload)

        await call("Network.enable")
        await call("Page.enable")
        await call("Page.navigate", url=page_url)
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline and not all(w in "".join(received) for w in wanted):
            try:
                await pump(1)
            except asyncio.TimeoutError:
                pass
        await asyncio.sleep(1.0)  # let xterm.js paint what arrived
        classes = (await call("Runtime.evaluate", expression="document.body.className", returnByValue=True))["result"].get("value", "")
        shot = base64.b64decode((await call("Page.captureScreenshot", format="png"))["data"])
    return "".join(received), classes, shot


@pytest.mark.skipif(CHROMIUM is None, reason="no chromium installed (apt-get install chromium)")
def test_a_browser_sees_the_debuggers_first_screen(tmp_path):
    pytest.importorskip("textual_serve")
    pytest.importorskip("aiohttp")
    from stepscope.tracer import load_trace

    trace = load_trace(FIXTURE)
    from stepscope.tui.text import escape_for_display
    from stepscope.tui.views.vocab import tok_text

    first_token = escape_for_display(tok_text(trace.tokens[trace.prompt_len])).strip("·")  # as the TUI shows it
    port, devtools = _free_port(), _free_port()
    env = {**os.environ, "PYTHONPATH": ROOT + os.pathsep + os.environ.get("PYTHONPATH", "")}
    server = subprocess.Popen([sys.executable, "-m", "stepscope", "serve", FIXTURE, "--port", str(port)], env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
    browser = None
    try:
        assert _wait_http(f"http://127.0.0.1:{port}/", 30) is not None, "the server did not start"
        browser = subprocess.Popen([CHROMIUM, "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                                    f"--remote-debugging-port={devtools}", f"--user-data-dir={tmp_path / 'profile'}",
                                    "--window-size=1400,900", "about:blank"],
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        wanted = [trace.model["name"], "step"]
        text, classes, shot = asyncio.run(_browse(devtools, f"http://127.0.0.1:{port}/", wanted, 60))
        (tmp_path / "serve.png").write_bytes(shot)
        if os.environ.get("STEPSCOPE_SERVE_SHOT"):
            shutil.copy(tmp_path / "serve.png", os.environ["STEPSCOPE_SERVE_SHOT"])
        assert "-first-byte" in classes.split(), f"the page never showed the terminal: {classes!r}"
        for word in wanted:
            assert word in text, f"{word!r} not on the debugger's first screen"
        assert first_token in text
        assert shot[:8] == b"\x89PNG\r\n\x1a\n" and len(shot) > 10_000  # a painted page, not a blank one
    finally:
        for proc in (browser, server):
            if proc is not None and proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
                try:
                    proc.wait(10)
                except subprocess.TimeoutExpired:
                    os.killpg(proc.pid, signal.SIGKILL)


def test_serve_refuses_a_bad_trace_in_one_line(tmp_path, capsys):
    assert main(["serve", str(tmp_path / "missing")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("stepscope: ")


def test_serve_forwards_model_and_generation_options(monkeypatch):
    seen = {}
    monkeypatch.setattr("stepscope.cli.serve.serve", lambda argv, **kw: seen.update(argv=argv, **kw))
    assert main(["serve", "--model", "smollm2", "--top-k", "5", "--no-chat", "--port", "8123"]) == 0
    assert seen["argv"][0] == "run" and seen["port"] == 8123 and seen["host"] == "127.0.0.1"
    argv = seen["argv"]
    assert argv[argv.index("--model") + 1] == "smollm2" and argv[argv.index("--top-k") + 1] == "5" and "--no-chat" in argv
    from stepscope.cli.common import generation_settings
    from stepscope.cli.main import build_parser
    from stepscope.cli.serve import app_command

    assert app_command(["view", "/a b"]).endswith("-m stepscope view '/a b'")
    run = build_parser().parse_args(argv)  # what each browser tab runs parses as `run` with the same settings
    assert run.command == "run" and run.model == "smollm2" and run.top_k == 5 and run.chat is False
    assert generation_settings(run).top_k == 5


def test_the_served_debugger_needs_no_tty(monkeypatch):
    """textual-serve runs `stepscope view` on pipes with its web driver: the TTY check lets it draw."""
    import io

    from stepscope.cli.common import CliError, check_terminal

    monkeypatch.setattr(sys, "stdin", io.StringIO())
    monkeypatch.delenv("TEXTUAL_DRIVER", raising=False)
    with pytest.raises(CliError, match="needs a terminal"):
        check_terminal()
    monkeypatch.setenv("TEXTUAL_DRIVER", "textual.drivers.web_driver:WebDriver")
    check_terminal()
