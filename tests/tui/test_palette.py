"""Pilot tests of the command palette (Ctrl+P): a step by token text and by number, a tensor by
fuzzy name, a layer/head, a pane, adding a breakpoint and a watch."""

from __future__ import annotations

import pytest

from stepscope.tracer import load_trace
from stepscope.tui.app import StepscopeApp
from stepscope.tui.screens.main import MainScreen
from stepscope.tui.widgets.tensor_list import TensorList
from stepscope.tui.widgets.watch import WatchPane

pytestmark = pytest.mark.anyio
SIZE = (120, 40)


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
    from tests.support.synthetic_trace import build_trace

    return load_trace(build_trace(tmp_path_factory.mktemp("palette") / "t", n_decode=7))


async def palette(pilot, query: str):
    """Open the palette, type `query`, wait for the hits, press Enter on the first."""
    from textual.command import CommandPalette

    await pilot.press("ctrl+p")
    assert CommandPalette.is_open(pilot.app)
    palette = pilot.app.screen
    palette.query_one("CommandInput").value = query
    for _ in range(100):  # the palette gathers hits in batches (0.25 s)
        await pilot.pause(0.05)
        if palette._list_visible:
            break
    await pilot.pause(0.4)  # the last batch of hits
    for _ in range(3):  # Enter on the first (best) hit: selects it, and runs it
        if pilot.app.screen is not palette:
            break
        await pilot.press("enter")
        await pilot.pause()
    assert isinstance(pilot.app.screen, MainScreen)


async def test_palette_jumps_to_a_step_by_token_text(synthetic):
    trace = synthetic
    target = next(i for i, s in enumerate(trace.steps) if s.token["text"] == "The")
    assert target > 0
    app = StepscopeApp(trace=trace)
    async with app.run_test(size=SIZE) as pilot:
        await palette(pilot, "The")
        assert app.step == target
        await palette(pilot, "step 2")
        assert app.step == 2
        await palette(pilot, "-1")
        assert app.step == len(trace.steps) - 1


async def test_palette_jumps_to_a_tensor_by_fuzzy_name(synthetic):
    app = StepscopeApp(trace=synthetic)
    async with app.run_test(size=SIZE) as pilot:
        await palette(pilot, "1 resid_mid")
        for _ in range(50):
            await pilot.pause(0.02)
            tensors = app.main_screen.pane("tensors").query_one(TensorList)
            if tensors.selected is not None and tensors.selected.name == "blocks.1.hook_resid_mid":
                break
        assert app.main_screen.active_pane_id == "tensors"
        assert tensors.selected.name == "blocks.1.hook_resid_mid"
        assert app.layer == 1 and tensors.has_focus


async def test_palette_layer_head_pane_breakpoint_watch(synthetic):
    app = StepscopeApp(trace=synthetic)
    async with app.run_test(size=SIZE) as pilot:
        await palette(pilot, "layer 1 head 3")
        assert (app.layer, app.head) == (1, 3)
        await palette(pilot, "attention")
        assert app.main_screen.active_pane_id == "heatmap"
        await palette(pilot, "break p>0.9 and entropy<5")
        assert [bp.spec for bp in app.breakpoints] == ["p>0.9 and entropy<5"]
        await palette(pilot, "watch norm(blocks.0.hook_resid_post[-1])")
        assert [w.text for w in app.main_screen.query_one(WatchPane).watches] == ["norm(blocks.0.hook_resid_post[-1])"]
