"""Nothing from a trace drives the terminal: a trace whose every string field holds OSC 52, title
and CSI escapes, C1 controls, bidi controls and 10,000-character values is walked through every
pane, dialog and notification (keys and clicks), and through the CLI's view/info/diff output; the
terminal output (the app's screen as the console writes it, the CLI's stdout and stderr) holds
none of them raw."""

from __future__ import annotations

import asyncio
import subprocess
import sys

import pytest

from stepscope.tracer import load_trace
from stepscope.tui.app import StepscopeApp
from stepscope.tui.screens.main import PANES, pane_key
from tests.support.hostile_trace import build_hostile_trace, raw_controls
from tests.support.paths import ROOT


@pytest.fixture(scope="module")
def hostile(tmp_path_factory):
    return build_hostile_trace(tmp_path_factory.mktemp("hostile") / "t")


def _terminal(app) -> str:
    """What the console writes for the current screen (dialogs and notifications included)."""
    return app.export_screenshot()


def test_every_pane_dialog_and_notification_shows_the_hostile_trace_inert(hostile):
    app = StepscopeApp(trace=load_trace(hostile))
    seen: dict[str, list[str]] = {}

    def look(what: str) -> None:
        out = _terminal(app)
        seen[what] = raw_controls(out)
        assert "\\x1b]52;c;UFdORUQ=" in out or what.startswith(("help", "goto", "palette", "breakpoints", "tensors")), what

    async def main():
        async with app.run_test(size=(160, 50), notifications=True) as pilot:
            await pilot.pause()
            for step in range(2):
                for i, (pid, _, _) in enumerate(PANES):
                    await pilot.press(pane_key(i))
                    await pilot.pause(0.3)
                    seen[f"{pid} at step {step}"] = raw_controls(_terminal(app))
                await pilot.press("n")
                await pilot.pause(0.2)
            await pilot.click(f"#tab-{PANES[6][0]}")  # the Model pane, by a click
            await pilot.pause(0.3)
            look("model (click)")
            await pilot.press(pane_key(2), "slash")  # the tensors pane's filter dialog
            await pilot.pause(0.2)
            await pilot.press(*"embed", "enter")
            await pilot.pause(0.3)
            look("tensors filtered")
            await pilot.press("w")  # a notification
            await pilot.pause(0.2)
            seen["notification"] = raw_controls(_terminal(app))
            for key, what in (("question_mark", "help"), ("R", "runs"), ("b", "breakpoints"), ("g", "goto")):
                await pilot.press(key)
                await pilot.pause(0.3)
                seen[what] = raw_controls(_terminal(app))
                await pilot.press("escape")
                await pilot.pause(0.1)
            await pilot.press("ctrl+p")
            await pilot.pause(0.3)
            await pilot.press(*"tensor")
            await pilot.pause(0.5)
            seen["palette"] = raw_controls(_terminal(app))
            await pilot.press("escape")

    asyncio.run(main())
    assert len(seen) > 20
    assert not {k: v for k, v in seen.items() if v}, {k: v for k, v in seen.items() if v}


def _cli(*argv: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "stepscope", *argv], cwd=ROOT, capture_output=True, text=True,
                          timeout=300, env={"COLUMNS": "200", "TERM": "xterm-256color", "FORCE_COLOR": "1", "PATH": "/usr/bin:/bin"})


@pytest.mark.parametrize("argv", [("info", "{t}"), ("info", "{t}", "--step", "1"), ("diff", "{t}", "{t}"), ("info", "{t}/nowhere")])
def test_cli_output_of_the_hostile_trace_is_inert(hostile, argv):
    res = _cli(*(a.format(t=hostile) for a in argv))
    assert not raw_controls(res.stdout + res.stderr, console_colours=True), (res.stdout + res.stderr)[:2000]
    if argv == ("info", "{t}"):
        assert res.returncode == 0, res.stderr
        assert "\\x1b]52;c;UFdORUQ=" in res.stdout
