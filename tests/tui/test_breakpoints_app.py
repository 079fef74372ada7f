"""Pilot tests: a two-sided `and` breakpoint typed in the breakpoints screen fires where a direct
computation says, and the status names the conditions with their values (replay and live)."""

from __future__ import annotations

import pytest

from stepscope.tui.app import StepscopeApp
from stepscope.tui.screens.breakpoints import BreakpointsScreen
from stepscope.tui.screens.main import MainScreen

pytestmark = pytest.mark.anyio
SIZE = (140, 40)


def status_text(app) -> str:
    strips = app.main_screen._compositor.render_strips()
    return "".join(segment.text for segment in strips[0])


async def test_two_sided_and_breakpoint_fires_with_its_conditions_named(fixture_trace):
    trace = fixture_trace
    probs = [s.sampling["chosen_prob"] for s in trace.steps]
    entropies = [s.sampling["entropy"] for s in trace.steps]
    lo = round(sorted(probs)[3], 4)  # p above a lower bound (the upper half fires) ...
    hi = round(sorted(entropies)[-2], 3)  # ... and entropy below an upper bound
    spec = f"p>{lo} and entropy<{hi}"
    expected = [i for i in range(1, len(probs)) if probs[i] > lo and entropies[i] < hi]
    assert expected and len(expected) < len(probs) - 1
    app = StepscopeApp(trace=trace)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("b")
        assert isinstance(app.screen, BreakpointsScreen)
        app.screen.query_one("Input").value = spec
        await pilot.press("enter", "escape")
        assert isinstance(app.screen, MainScreen)
        await pilot.press("c")
        assert app.step == expected[0]
        status = status_text(app)
        assert f"breakpoint at step {expected[0]}: p(chosen) > {lo:g} ({probs[expected[0]]:.4g})" in status
        assert f"entropy < {hi:g} ({entropies[expected[0]]:.4g})" in status
        if len(expected) > 1:
            await pilot.press("c")
            assert app.step == expected[1]


async def test_expression_breakpoint_on_arrays(fixture_trace):
    """rank("x")<=R from the recorded logits stops where numpy says."""
    trace = fixture_trace
    ranks = [1 + int((s["logits"][-1] > s["logits"][-1, 87]).sum()) for s in trace.steps]
    bound = sorted(ranks[1:])[1]
    expected = [i for i in range(1, len(ranks)) if ranks[i] <= bound]
    app = StepscopeApp(trace=trace)
    async with app.run_test(size=SIZE) as pilot:
        app.breakpoints.add(f"rank('x')<={bound}")
        await pilot.press("c")  # reads step files: scanned in a worker
        for _ in range(200):
            if not app.continuing:
                break
            await pilot.pause(0.02)
        assert not app.busy and app.step == expected[0]
        assert f'rank("x") <= {bound} ({ranks[expected[0]]})' in status_text(app)
        app.breakpoints.clear()
        app.breakpoints.add("norm(logits[-1])<0")  # never fires: the scan ends at the last step
        await pilot.press("c")
        for _ in range(200):
            if not app.continuing:
                break
            await pilot.pause(0.02)
        assert app.step == len(trace.steps) - 1 and "end of trace" in status_text(app)


async def test_live_continue_stops_at_a_two_sided_breakpoint(tiny):
    from stepscope.tracer.session import GenerationSettings, LiveSession

    model, tokenizer = tiny

    def factory():
        return LiveSession(model, tokenizer, "Hi", GenerationSettings(max_new_tokens=12, stop_at_eos=False))

    app = StepscopeApp(session_factory=factory)
    async with app.run_test(size=SIZE) as pilot:
        for _ in range(300):
            await pilot.pause(0.02)
            if app.n_steps and not app.busy:
                break
        app.breakpoints.add("step>=3 and step<=4 and norm(logits[-1])>0")  # reads the step file (worker side)
        await pilot.press("c")
        for _ in range(500):
            await pilot.pause(0.02)
            if not app.continuing:
                break
        assert app.step == 3
        assert "breakpoint at step 3: step >= 3 (3) and step <= 4 (3) and norm(logits[-1]) > 0 (" in status_text(app)
