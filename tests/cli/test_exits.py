"""Exit statuses and temporary directories of the commands, driven as a user does: on a
pseudo-terminal with keys and signals (0 normal, 2 bad input, 130 Ctrl-C, 143 SIGTERM), and the
live session's temporary directory gone after every one of them."""

from __future__ import annotations

import fcntl
import glob
import os
import pty
import re
import select
import signal
import socket
import struct
import subprocess
import sys
import termios
import time

import pytest

from stepscope.cli.common import EXIT_INTERRUPTED, EXIT_OK, EXIT_TERMINATED, EXIT_USAGE, exit_status
from stepscope.tracer import load_trace
from stepscope.tracer.budget import disk_bytes
from stepscope.tracer.model_spec import ModelLoadError
from stepscope.tracer.scratch import LIVE_DIR_PREFIX
from stepscope.tracer.trace_format import human_bytes
from stepscope.tui.app import StepscopeApp
from tests.support.paths import FIXTURE, ROOT


def _env(tmp_path, **extra) -> dict:
    tmp = tmp_path / "tmp"
    tmp.mkdir(exist_ok=True)
    return dict(os.environ, TMPDIR=str(tmp), HF_HUB_OFFLINE="1", **extra)


def _cli(*args, env, timeout=120):
    return subprocess.run([sys.executable, "-m", "stepscope", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=timeout, env=env)


class Terminal:
    """`stepscope ARGS` on a 120x40 pseudo-terminal (stdin, stdout and stderr, where Textual draws)."""

    def __init__(self, args: list[str], env: dict):
        self.master, slave = pty.openpty()
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 120, 0, 0))
        self.proc = subprocess.Popen([sys.executable, "-m", "stepscope", *args], cwd=ROOT, env=env,
                                     stdin=slave, stdout=slave, stderr=slave, start_new_session=True)
        os.close(slave)
        self.output = b""

    def pump(self, seconds: float) -> None:
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            ready, _, _ = select.select([self.master], [], [], 0.1)
            if ready:
                try:
                    self.output += os.read(self.master, 65536)
                except OSError:
                    return

    def wait_for(self, predicate, seconds: float) -> None:
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            if predicate():
                return
            self.pump(0.2)
            assert self.proc.poll() is None, (self.proc.returncode, self.output[-2000:])
        raise AssertionError(f"timed out; screen so far: {self.output[-2000:]!r}")

    def send(self, data: bytes) -> None:
        os.write(self.master, data)

    def finish(self, seconds: float = 60) -> int:
        end = time.monotonic() + seconds
        while self.proc.poll() is None and time.monotonic() < end:
            self.pump(0.2)
        if self.proc.poll() is None:
            self.proc.kill()
            raise AssertionError("the debugger did not exit")
        os.close(self.master)
        return self.proc.returncode


def _live_dirs(env) -> list[str]:
    return glob.glob(os.path.join(env["TMPDIR"], f"{LIVE_DIR_PREFIX}*"))


@pytest.mark.parametrize("how, status", [("q", EXIT_OK), ("ctrl-c", EXIT_INTERRUPTED), ("sigterm", EXIT_TERMINATED)])
def test_a_live_run_leaves_no_directory_on_any_exit(how, status, tiny_model_dir, tmp_path):
    env = _env(tmp_path)
    term = Terminal(["run", "--model", tiny_model_dir, "--max-new-tokens", "3", "--prompt", "Hi", "--no-chat"], env)
    term.wait_for(lambda: _live_dirs(env) and glob.glob(os.path.join(_live_dirs(env)[0], "step_*")), 120)
    assert re.search(rf"{LIVE_DIR_PREFIX}{term.proc.pid}-", _live_dirs(env)[0])
    term.pump(1.0)
    if how == "q":
        term.send(b"q")
    elif how == "ctrl-c":
        term.send(b"\x03")
    else:
        term.proc.send_signal(signal.SIGTERM)
    assert term.finish() == status
    assert _live_dirs(env) == []


def test_ctrl_c_in_the_replay_debugger_exits_130(tmp_path):
    term = Terminal(["view", FIXTURE], _env(tmp_path))
    term.wait_for(lambda: b"step" in term.output, 60)
    term.pump(1.0)
    term.send(b"\x03")
    assert term.finish() == EXIT_INTERRUPTED


def test_a_killed_runs_directory_is_cleaned_at_the_next_start(tmp_path):
    env = _env(tmp_path)
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    stale = os.path.join(env["TMPDIR"], f"{LIVE_DIR_PREFIX}{dead.pid}-x")
    os.makedirs(os.path.join(stale, "inner"))
    foreign = os.path.join(env["TMPDIR"], "stepscope-live-other")
    os.makedirs(foreign)
    assert _cli("info", FIXTURE, env=env).returncode == 0
    assert not os.path.exists(stale) and os.path.isdir(foreign)


# -- bad input before the app opens --------------------------------------------------------------
@pytest.mark.parametrize("command", [["run"], ["trace", "--out", "never"], ["serve"]])
def test_an_uncached_hub_id_is_refused_at_once_offline(command, tmp_path):
    env = _env(tmp_path, HF_HOME=str(tmp_path / "hf"))
    t0 = time.monotonic()
    r = _cli(*command, "--model", "nonexistent/model", env=env)
    assert r.returncode == EXIT_USAGE, r.stderr
    assert time.monotonic() - t0 < 30
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "nonexistent/model" in lines[0] and "local Hugging Face cache" in lines[0]
    assert not os.path.exists(os.path.join(ROOT, "never"))


def test_an_unreachable_hub_is_refused_without_waiting(tmp_path):
    with socket.socket() as s:  # a port nobody listens on: the connection is refused at once
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = _env(tmp_path, HF_HOME=str(tmp_path / "hf"), HF_ENDPOINT=f"http://127.0.0.1:{port}")
    env.pop("HF_HUB_OFFLINE")
    t0 = time.monotonic()
    r = _cli("run", "--model", "nonexistent/model", env=env)
    assert r.returncode == EXIT_USAGE and "cannot be reached" in r.stderr
    assert time.monotonic() - t0 < 30


@pytest.mark.anyio
async def test_the_load_error_dialog_quits_when_closed_with_status_2():
    def factory(progress=None):
        raise ModelLoadError("cannot load model 'x': no such thing")

    app = StepscopeApp(session_factory=factory)
    async with app.run_test(size=(120, 40)) as pilot:
        for _ in range(50):
            await pilot.pause(0.05)
            if type(app.screen).__name__ == "ErrorScreen":
                break
        assert type(app.screen).__name__ == "ErrorScreen"
        assert "closing this quits" in str(app.screen.hint)
        await pilot.press("escape")
        await pilot.pause(0.1)
    assert app.load_failure is not None
    assert exit_status(app) == EXIT_USAGE


@pytest.mark.anyio
async def test_the_load_error_dialogs_ok_button_quits_too():
    def factory(progress=None):
        raise RuntimeError("out of memory")

    app = StepscopeApp(session_factory=factory)
    async with app.run_test(size=(120, 40)) as pilot:
        for _ in range(50):
            await pilot.pause(0.05)
            if type(app.screen).__name__ == "ErrorScreen":
                break
        await pilot.click("#error-ok")
        await pilot.pause(0.1)
    assert exit_status(app) == 1  # not bad input: an internal failure


@pytest.mark.anyio
async def test_ctrl_c_sets_status_130(fixture_trace):
    app = StepscopeApp(trace=fixture_trace)
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.press("ctrl+c")
        await pilot.pause(0.1)
    assert exit_status(app) == EXIT_INTERRUPTED


# -- trace: new parents, the size line -----------------------------------------------------------
def test_trace_creates_parents_and_prints_the_size_on_disk(tiny_model_dir, tmp_path):
    out = tmp_path / "new" / "deeper" / "t"
    r = _cli("trace", "--model", tiny_model_dir, "--out", str(out), "--max-new-tokens", "3", "--prompt", "Hi", env=_env(tmp_path))
    assert r.returncode == 0, r.stderr
    size = re.search(r"size: (\S+ \S+)", r.stdout).group(1)
    du = int(subprocess.run(["du", "--apparent-size", "-sb", str(out)], capture_output=True, text=True).stdout.split()[0])
    assert size == human_bytes(disk_bytes(str(out))) == human_bytes(du)
    assert len(load_trace(str(out)).steps) == 3


def test_serve_stopped_by_ctrl_c_exits_130(tmp_path):
    pytest.importorskip("textual_serve")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([sys.executable, "-m", "stepscope", "serve", FIXTURE, "--port", str(port)], cwd=ROOT,
                            env=_env(tmp_path), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    end = time.monotonic() + 60
    while time.monotonic() < end:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                break
        time.sleep(0.2)
    proc.send_signal(signal.SIGINT)
    assert proc.wait(timeout=30) == EXIT_INTERRUPTED
