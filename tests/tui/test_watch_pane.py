"""Pilot tests of the Watch pane: `=` adds an expression, values over all steps (from the worker)
equal a direct numpy computation, a malformed expression gives one line and changes nothing."""

from __future__ import annotations

import numpy as np
import pytest

from stepscope.tui.app import StepscopeApp
from stepscope.tui.screens.main import MainScreen
from stepscope.tui.screens.prompt import PromptScreen
from stepscope.tui.widgets.watch import WatchPane, bin_of, spark

pytestmark = pytest.mark.anyio
SIZE = (120, 40)


def screen_text(app) -> str:
    strips = app.screen._compositor.render_strips()
    return "\n".join("".join(segment.text for segment in strip) for strip in strips)


async def wait_for(pilot, predicate, tries=200):
    for _ in range(tries):
        if predicate():
            return True
        await pilot.pause(0.02)
    return predicate()


async def add_watch(pilot, text: str):
    await pilot.press("equals_sign")
    assert isinstance(pilot.app.screen, PromptScreen)
    pilot.app.screen.query_one("Input").value = text
    await pilot.press("enter")


async def test_watch_values_over_all_steps_equal_numpy(fixture_trace):
    trace = fixture_trace
    app = StepscopeApp(trace=trace)
    async with app.run_test(size=SIZE) as pilot:
        pane = app.main_screen.query_one(WatchPane)
        assert not pane.display or not pane.watches  # hidden while empty
        await add_watch(pilot, "norm(blocks.1.hook_resid_post[-1])")
        await add_watch(pilot, "pattern(1, 3)[-1, 0]")
        await add_watch(pilot, "entropy")
        assert isinstance(app.screen, MainScreen) and len(pane.watches) == 3
        n = len(trace.steps)
        assert await wait_for(pilot, lambda: all(not w.missing(trace) for w in pane.watches))
        norms = [np.linalg.norm(trace.steps[i]["blocks.1.hook_resid_post"][-1].astype(np.float64)) for i in range(n)]
        cells = [float(trace.steps[i]["blocks.1.attn.hook_pattern"][3, -1, 0]) for i in range(n)]
        entropies = [trace.steps[i].sampling["entropy"] for i in range(n)]
        for watch, expected in zip(pane.watches, (norms, cells, entropies)):
            np.testing.assert_allclose(watch.cached(trace), expected, rtol=1e-6)
        await pilot.press("n", "n", "n")
        await pilot.pause()
        text = screen_text(app)
        assert "norm(blocks.1.hook_resid_post[-1])" in text and "pattern(1, 3)[-1, 0]" in text
        assert f"{norms[3]:.4f}" in text and f"{entropies[3]:.4f}" in text
        chars = spark(pane.watches[2].cached(trace), pane.size.width - 12)
        assert chars in text.replace("\n", "") or chars[:20] in text


async def test_malformed_watch_gives_one_line_and_changes_nothing(fixture_trace):
    app = StepscopeApp(trace=fixture_trace)
    async with app.run_test(size=SIZE) as pilot:
        pane = app.main_screen.query_one(WatchPane)
        await add_watch(pilot, "entropy")
        await pilot.press("n")
        before = (app.cursor, [w.text for w in pane.watches])
        for bad in ("norm(blocks.1.hook_resid_post[-1]", "blocks.9.hook_x", 'p("Hello")', "logits", "eval(1)"):
            await add_watch(pilot, bad)
            assert isinstance(app.screen, PromptScreen)  # the prompt stays, with one line under it
            error = str(app.screen.query_one("#prompt-error").render())
            assert error and "\n" not in error.strip()
            await pilot.press("escape")
            assert isinstance(app.screen, MainScreen)
            assert (app.cursor, [w.text for w in pane.watches]) == before


async def test_a_step_without_a_value_says_why(fixture_trace):
    app = StepscopeApp(trace=fixture_trace)
    async with app.run_test(size=SIZE) as pilot:
        pane = app.main_screen.query_one(WatchPane)
        assert pane.add_watch("blocks.0.hook_resid_post[3, 0]") is None  # only the prefill has 4 rows
        await pilot.pause()
        assert "outside axis 0" not in screen_text(app)
        await pilot.press("n")
        await pilot.pause()
        text = screen_text(app)
        assert "–" in text and "index 3 is outside axis 0" in text


async def test_remove_a_watch_with_the_pane_focused(fixture_trace):
    app = StepscopeApp(trace=fixture_trace)
    async with app.run_test(size=SIZE) as pilot:
        pane = app.main_screen.query_one(WatchPane)
        await add_watch(pilot, "p")
        await add_watch(pilot, "top1")
        pane.focus()
        await pilot.press("up", "d")
        assert [w.text for w in pane.watches] == ["top1"]
        await pilot.press("d")
        assert pane.watches == [] and not pane.has_class("-has-watches")


def test_spark_bins_and_unknowns():
    values = np.array([0.0, 1.0, np.nan, 3.0])
    assert spark(values, 10) == "▁▃·█"
    chars = spark(np.arange(100, dtype=float), 10)  # each column: the last step of its bin
    assert len(chars) == 10 and chars == "".join(sorted(chars)) and chars[-1] == "█"
    assert bin_of(99, 100, 10) == 9 and bin_of(0, 100, 10) == 0 and bin_of(3, 4, 10) == 3
