"""The Patching pane: keys and clicks on a precomputed result (no model), and the sweep worker on a tiny model."""

from __future__ import annotations

import asyncio
import time

import numpy as np
import pytest

from stepscope import seam
from stepscope.cli.patch import patch_app
from stepscope.tracer import load_trace
from stepscope.tracer.patch_format import result_path
from stepscope.tui.screens.snippet import SnippetScreen
from stepscope.tui.widgets.patching import ROW_LABEL, TOP, PatchingPane
from tests.support.app_harness import screen
from tests.support.patching_pair import fake_result, record_pair


@pytest.fixture(scope="module")
def pair(tiny_model_dir, tmp_path_factory):
    clean, corrupt = record_pair(tiny_model_dir, str(tmp_path_factory.mktemp("pane")))
    return load_trace(clean), load_trace(corrupt)


def _run(app, script, size=(120, 40)):
    async def main():
        async with app.run_test(size=size) as pilot:
            await pilot.pause()
            await script(app, pilot)

    asyncio.run(main())
    assert app.last_error is None, app.last_error


def test_keys_and_clicks_on_a_saved_result(pair, monkeypatch):
    clean, corrupt = pair
    for site in ("resid_pre", "head"):
        fake_result(clean, corrupt, site).save(result_path(clean.path, corrupt.path, site, "patch", 0))

    def no_model(*args, **kwargs):
        raise AssertionError("a saved result opens without a model")

    monkeypatch.setattr(seam, "patching_model", no_model)
    app = patch_app(clean, corrupt, "resid_pre", 0, "patch")

    async def script(app, pilot):
        pane = app.main_screen.pane("patching")
        assert isinstance(pane, PatchingPane) and app.main_screen.active_pane_id == "patching"
        assert pane.result is not None and pane.result.values.shape == (2, 11)
        text = screen(app)
        assert "resid_pre per layer × position" in text and "   c*    a*    t*" in text and "P Patching" in text
        pane.focus()
        await pilot.press("down", "right", "right", "right", "right")
        await pilot.pause()
        assert (app.cursor.layer, pane.column) == (1, 4)
        assert "L1 position 4 'c' (corrupted 'd')" in screen(app)
        await pilot.click(PatchingPane, offset=(ROW_LABEL + pane.cell_width * 5 + 1, TOP))  # layer 0, position 5
        await pilot.pause()
        assert (app.cursor.layer, pane.column) == (0, 5)
        await pilot.press("t")
        await pilot.pause()
        assert isinstance(app.screen, SnippetScreen) and "run_with_hooks" in screen(app)
        await pilot.press("tab")
        await pilot.pause()
        assert "model.trace(corrupt)" in screen(app)
        await pilot.press("escape")
        await pilot.pause()
        await pilot.press("s")  # attn_out: nothing saved
        await pilot.pause()
        assert pane.site == "attn_out" and pane.result is None and "r runs it" in screen(app)
        await pilot.press("s", "s")  # head: saved
        await pilot.pause()
        assert pane.site == "head" and pane.result.values.shape == (2, 4)
        await pilot.press("right", "right", "down")
        await pilot.pause()
        assert (app.cursor.layer, app.cursor.head) == (1, 2)
        await pilot.press("enter")
        await pilot.pause()
        assert app.main_screen.active_pane_id == "heatmap" and (app.cursor.layer, app.cursor.head) == (1, 2)
        await pilot.press("P")
        await pilot.pause()
        pane.focus()
        await pilot.click(PatchingPane, offset=(ROW_LABEL + pane.cell_width * 3 + 1, TOP))  # layer 0, head 3
        await pilot.press("y")
        await pilot.pause()
        assert app.main_screen.active_pane_id == "why" and (app.cursor.layer, app.cursor.head) == (0, 3)

    _run(app, script)


def test_a_bad_saved_result_is_one_line_in_the_pane(pair):
    clean, corrupt = pair
    path = result_path(clean.path, corrupt.path, "mlp_out", "attribution", 0)
    fake_result(clean, corrupt, "mlp_out", "attribution").save(path)
    with open(path, "r+") as f:
        f.write("{garbage")
    app = patch_app(clean, corrupt, "mlp_out", 0, "attribution")

    async def script(app, pilot):
        pane = app.main_screen.pane("patching")
        assert pane.result is None and pane.running is None
        assert "not a usable patching result" in screen(app)

    _run(app, script)


def test_the_sweep_worker_reports_progress_and_the_app_stays_responsive(pair, monkeypatch):
    clean, corrupt = pair
    real = seam.patching_sweep
    seen = []

    def slow_sweep(model, c, r, site="resid_pre", step=0, method="patch", progress=None):
        def slow(done, total):
            seen.append(done)
            time.sleep(0.05)
            progress(done, total)
        return real(model, c, r, site=site, step=step, method=method, progress=slow)

    monkeypatch.setattr(seam, "patching_sweep", slow_sweep)
    app = patch_app(clean, corrupt, "attn_out", 0, "patch")

    async def script(app, pilot):
        pane = app.main_screen.pane("patching")
        assert pane.running is not None
        await pilot.press("j")  # the debugger's keys work while the sweep runs
        await pilot.pause(0.05)
        assert app.cursor.layer == 1
        deadline = time.monotonic() + 60
        while pane.running is not None and time.monotonic() < deadline:
            await pilot.pause(0.05)
        assert pane.running is None and pane.result is not None, pane.status
        assert seen and "swept in" in screen(app)
        direct = real(pane.model, clean, corrupt, site="attn_out")
        np.testing.assert_allclose(pane.result.values, direct.values, atol=1e-6)

    _run(app, script)
    monkeypatch.setattr(seam, "patching_model", lambda *a, **k: pytest.fail("the saved sweep reopens without a model"))
    again = patch_app(load_trace(clean.path), corrupt, "attn_out", 0, "patch")

    async def reopened(app, pilot):
        pane = app.main_screen.pane("patching")
        assert pane.running is None and pane.result is not None

    _run(again, reopened)


def test_ctrl_t_in_the_intervention_dialog_shows_its_snippets(tiny):
    from stepscope.tui.app import StepscopeApp
    from tests.support.app_harness import make_factory, wait_idle

    app = StepscopeApp(session_factory=make_factory(tiny, max_new_tokens=3))

    async def script(app, pilot):
        await wait_idle(app, pilot)
        await pilot.press("n")
        await wait_idle(app, pilot)
        await pilot.press("j", "l", "I")  # layer 1, head 1
        await pilot.pause()
        assert "Ctrl+T snippet" in screen(app)
        await pilot.press("ctrl+t")
        await pilot.pause()
        assert isinstance(app.screen, SnippetScreen)
        text = screen(app)
        assert "zero head 1.1" in text and "blocks.1.attn.hook_z" in text and "act[:, 5:, 1] = 0" in text
        await pilot.press("tab")
        await pilot.pause()
        assert "model.model.layers[1].self_attn.o_proj.input[:, 5:, 16:32] = 0" in screen(app)
        await pilot.press("escape")
        await pilot.pause()
        field = app.screen.query_one("Input")
        field.value = "zero head x"
        await pilot.press("ctrl+t")
        await pilot.pause()
        assert not isinstance(app.screen, SnippetScreen) and "not an intervention" in screen(app)
        await pilot.press("escape")

    _run(app, script)
