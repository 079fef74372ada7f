"""`w` in the live debugger writes the whole session: the original run and every branch, and the
written directory reopens (`stepscope view`) with `B` stepping through all its runs."""

from __future__ import annotations

import pytest

from stepscope.tracer import load_trace
from stepscope.tracer.branch_layout import branch_path, list_branches
from stepscope.tui.app import StepscopeApp
from stepscope.tui.screens.prompt import PromptScreen
from tests.support.app_harness import make_factory, wait_idle

pytestmark = pytest.mark.anyio


async def _until(pilot, predicate, timeout=30.0):
    for _ in range(int(timeout / 0.05)):
        if predicate():
            return
        await pilot.pause(0.05)
    raise AssertionError("timed out")


async def _branch_here(app, pilot) -> None:
    n = len(app.run_keys)
    await pilot.press("F")  # force the default rival token at the cursor's step
    await _until(pilot, lambda: isinstance(app.screen, PromptScreen))
    await pilot.press("enter")
    await _until(pilot, lambda: len(app.run_keys) == n + 1 and not app.busy)


async def test_w_writes_the_original_and_both_branches(tiny, tmp_path):
    app = StepscopeApp(session_factory=make_factory(tiny, max_new_tokens=4))
    out = tmp_path / "written"
    async with app.run_test(size=(120, 40)) as pilot:
        await wait_idle(app, pilot)
        await pilot.press("n", "n")
        await wait_idle(app, pilot)
        await pilot.press("left")  # step 1
        await _branch_here(app, pilot)  # b1 at step 1, now current
        await pilot.press("B")  # back to the original
        await _until(pilot, lambda: app.current_run == "" and not app.busy)
        await pilot.press("end")
        await _branch_here(app, pilot)  # b2 at the original's last step
        assert app.run_keys == ["", "b1", "b2"]
        steps = {key: len(app.run_traces[key].steps) for key in app.run_keys}
        await pilot.press("w")
        await _until(pilot, lambda: isinstance(app.screen, PromptScreen))
        app.screen.query_one("Input").value = str(out)
        await pilot.press("enter")
        await _until(pilot, lambda: (out / "manifest.json").exists() and not isinstance(app.screen, PromptScreen))
        await pilot.pause(0.2)
    assert app.last_error is None, app.last_error
    assert sorted(b["name"] for b in list_branches(str(out))) == ["b1", "b2"]
    for key, n in steps.items():
        assert len(load_trace(branch_path(str(out), key) if key else str(out)).steps) == n

    replay = StepscopeApp(trace=load_trace(str(out)))  # `stepscope view` of what was written
    async with replay.run_test(size=(120, 40)) as pilot:
        await pilot.pause()
        seen = [replay.trace.path]
        for _ in range(3):
            await pilot.press("B")
            await pilot.pause(0.2)
            seen.append(replay.trace.path)
    assert [p.rstrip("/") for p in seen] == [str(out), branch_path(str(out), "b1"), branch_path(str(out), "b2"), str(out)]
