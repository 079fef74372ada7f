"""The seeded monkey (tests/support/monkey.py) on a replay and on a live session, bounded for CI
(`bench/monkey.py --seed S --events N` runs any number), and the failures it found, each kept as a
direct reproducer."""

from __future__ import annotations

import asyncio

import pytest

from stepscope.tracer import load_trace
from stepscope.tui.app import StepscopeApp
from tests.support.app_harness import run
from tests.support.monkey import control_characters, hostile_replay_trace, run_live, run_replay, status_line


@pytest.fixture(scope="module")
def hostile_trace(tmp_path_factory, tiny):
    return hostile_replay_trace(str(tmp_path_factory.mktemp("monkey") / "trace"), *tiny)


# -- failures the monkey found ---------------------------------------------------------------------
@pytest.mark.parametrize("size", [(80, 24), (90, 24), (111, 29)])
def test_a_long_note_never_hides_the_layer_and_head(hostile_trace, tmp_path, size):
    """(monkey seed 1, replay) At the end of a trace whose stop reason is long, the note kept the
    status bar's room and the layer and head were dropped."""
    app = StepscopeApp(trace=load_trace(hostile_trace))

    async def script(app, pilot):
        await pilot.press("j", "l", "end", "n")  # `n` at the end: the note says why the trace ended
        await pilot.pause()
        line = status_line(app)
        assert "end of trace" in line
        for piece in (f"step {app.n_steps - 1}/{app.n_steps - 1}", "L 1", "H 1"):
            assert piece in line, line

    run(app, script, size=size)


def test_the_control_check_sees_a_raw_escape():
    from rich.segment import Segment

    assert control_characters([[Segment("ok \\x1b")]]) == []
    assert control_characters([[Segment("a\x1b[2J")], [Segment("\x9b31m")]])


# -- the monkey, bounded for CI (bench/monkey.py runs any number of events) --------------------------
@pytest.mark.parametrize("seed", [2])
def test_replay_monkey(hostile_trace, tmp_path, monkeypatch, seed):
    monkeypatch.chdir(tmp_path)  # `w` and exports write under the working directory
    outcome = run_replay(hostile_trace, seed, 40)
    assert outcome.failure is None, str(outcome.failure)


@pytest.mark.parametrize("seed", [3])
def test_live_monkey(tiny, tmp_path, monkeypatch, seed):
    monkeypatch.chdir(tmp_path)
    outcome = run_live(*tiny, seed, 40)
    assert outcome.failure is None, str(outcome.failure)


def test_the_palette_offers_no_command_that_hides_the_header():
    """Textual's `Maximize` made one widget fill the screen and hid the status bar (found by the monkey)."""
    from stepscope.tracer import load_trace
    from stepscope.tui.app import StepscopeApp
    from tests.support.paths import FIXTURE

    async def main() -> list[str]:
        app = StepscopeApp(trace=load_trace(FIXTURE))
        async with app.run_test(size=(120, 40)):
            return [c.title for c in app.get_system_commands(app.screen)]

    titles = asyncio.run(main())
    assert titles and "Quit" in " ".join(titles)
    assert not {"Maximize", "Minimize"} & set(titles)
