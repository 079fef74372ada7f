"""Data flows one way: tracer -> trace -> tui. The replay path of the TUI never imports torch."""

from __future__ import annotations

import subprocess
import sys

from tests.support.paths import FIXTURE, ROOT

REPLAY = """
import asyncio, sys
from stepscope.tracer import load_trace
from stepscope.tui.app import StepscopeApp

async def main():
    app = StepscopeApp(trace=load_trace(sys.argv[1]))
    async with app.run_test(size=(120, 40)) as pilot:
        for key in ["n", "n", "j", "l", "2", "tab", "s", "escape", "3", "4", "5", "6", "7", "1", "end", "home"]:
            await pilot.press(key)
        await pilot.pause()
        assert app.step == 0, app.step

asyncio.run(main())
heavy = sorted(m for m in ("torch", "transformers", "accelerate") if m in sys.modules)
assert not heavy, heavy
print("ok")
"""


def test_replaying_a_trace_never_imports_torch():
    res = subprocess.run([sys.executable, "-c", REPLAY, FIXTURE], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr[-2000:]
    assert res.stdout.strip().endswith("ok")


def test_cli_view_path_imports_no_torch():
    code = ("import sys, stepscope, stepscope.cli.main, stepscope.seam, stepscope.tui.app; "
            "heavy = sorted(m for m in ('torch', 'transformers', 'accelerate') if m in sys.modules); "
            "assert not heavy, heavy; print('ok')")
    res = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr


def test_stepscope_view_runs_without_torch():
    """`stepscope view` end to end, up to the terminal check (pytest has no TTY), imports no torch."""
    code = ("import sys\n"
            "from stepscope.cli.main import main\n"
            "rc = main(['view', sys.argv[1]])\n"
            "heavy = sorted(m for m in ('torch', 'transformers', 'accelerate') if m in sys.modules)\n"
            "assert rc == 2 and not heavy, (rc, heavy)\n"
            "print('ok')\n")
    res = subprocess.run([sys.executable, "-c", code, FIXTURE], cwd=ROOT, capture_output=True, text=True, timeout=60,
                         stdin=subprocess.DEVNULL)
    assert res.returncode == 0, res.stderr
    assert "needs a terminal" in res.stderr and res.stdout.strip().endswith("ok")
