"""The pane widgets mounted alone in a minimal App, driven with Pilot."""

import numpy as np
import pytest

from stepscope.tracer import load_trace
from stepscope.tui.views.tensors import format_number
from stepscope.tui.widgets.heatmap import HeatmapPane
from stepscope.tui.widgets.kv_cache import KVCachePane
from stepscope.tui.widgets.logit_lens import LogitLensPane
from stepscope.tui.widgets.model_overview import ModelOverviewPane
from stepscope.tui.widgets.tensor_browser import TensorBrowser
from stepscope.tui.widgets.tensor_inspector import TensorInspector
from stepscope.tui.widgets.tensor_list import TensorList
from tests.support import synthetic_trace as syn
from tests.support.pane_harness import assert_inert, drive, screen_lines, screen_text
from tests.support.paths import FIXTURE


@pytest.fixture(scope="module")
def trace(tmp_path_factory):
    return load_trace(syn.build_trace(tmp_path_factory.mktemp("syn") / "trace", n_decode=4))


# -- heatmap: see test_panes_heatmap_strip_candidates.py----------------------------------------------


# -- tensor inspector ---------------------------------------------------------------------------------


def test_tensor_inspector_lists_stats_and_op(trace):
    pane = TensorInspector(trace)

    async def script(app, pilot):
        app.query_one(TensorList).focus()
        await pilot.pause()
        shown = screen_lines(app)
        header = next(i for i, line in enumerate(shown) if line.startswith("tensor"))
        legend, lines = " ".join(shown[:header]), shown[header:]  # the legend wraps between its parts
        assert "‖x‖ (L2 norm) over every element" in legend  # what each figure is
        assert lines[0].startswith("tensor") and "shape" in lines[0] and "min" in lines[0]
        assert lines[1].startswith("hook_embed") and "[6, 16]" in lines[1] and "float32" in lines[1]
        arr = np.asarray(trace.steps[0]["hook_embed"], dtype=np.float64)
        assert format_number(arr.min(), 9) in lines[1] and format_number(arr.max(), 9) in lines[1]
        text = screen_text(app)
        assert "W_E [50, 16][ids [6]] → embed [6, 16]" in text
        assert f"mean {format_number(arr.mean(), 10).strip()}" in text
        await pilot.press("down", "down", "down")
        assert pane.selected == "blocks.0.attn.hook_q"
        assert "ln1 [6, 16] × W_Q [16, 16] → q [6, 4, 4]" in screen_text(app)
        pane.cursor = pane.cursor.moved(layer=1)
        await pilot.pause()
        assert pane.selected == "blocks.1.hook_resid_pre"
        pane.cursor = pane.cursor.moved(step=2)
        await pilot.pause()
        assert pane.selected == "blocks.1.hook_resid_pre"  # the selection survives a step change
        assert "blocks.1.hook_resid_pre  [1, 16] float32" in screen_text(app)

    drive(pane, script, size=(110, 32))


def test_tensor_inspector_browse_slices_and_export(trace, tmp_path):
    pane = TensorInspector(trace, export_dir=str(tmp_path / "out"))

    async def script(app, pilot):
        app.query_one(TensorList).focus()
        pane.cursor = pane.cursor.moved(head=3)
        app.query_one(TensorList).select_name("blocks.0.attn.hook_pattern")
        await pilot.press("enter")
        browser = app.query_one(TensorBrowser)
        assert pane.browsing and browser.lead == (3,)  # the heads axis starts at the selected head
        pattern = trace.steps[0]["blocks.0.attn.hook_pattern"]  # [H, T, S]
        text = screen_text(app)
        assert "[head 3, position :, key :]" in text and format_number(float(pattern[3, 5, 0]), 10).strip() in text
        await pilot.press("left_square_bracket")
        assert browser.lead == (2,) and "[head 2, position :, key :]" in screen_text(app)
        np.testing.assert_array_equal(browser.current_slice(), pattern[2])
        await pilot.press("escape")
        assert not pane.browsing and app.focused is app.query_one(TensorList)
        await pilot.press("e")
        await pilot.pause()
        (message,) = app.messages
        assert message.name == "blocks.0.attn.hook_pattern"
        assert message.path == str(tmp_path / "out" / "step00000_blocks.0.attn.hook_pattern.npy")
        np.testing.assert_array_equal(np.load(message.path), pattern)
        assert "exported →" in screen_text(app)

    drive(pane, script, size=(110, 32))


# -- logit lens, KV cache, model overview --------------------------------------------------------------


def test_logit_lens_pane(trace):
    pane = LogitLensPane(trace)

    async def script(app, pilot):
        pane.cursor = pane.cursor.moved(step=1, layer=1)
        await pilot.pause()
        text = screen_text(app)
        ids = trace.steps[1]["logit_lens.ids"]  # [n_layers, k]
        first = next(layer for layer in range(2) if ids[layer, 0] == 9)
        assert "step 1 chose \\x1b[31m (id 9)" in text and f"first top-1 at layer {first}" in text
        assert "◀ first" in text
        assert_inert(app)

    drive(pane, script)


def test_kv_cache_pane_and_inert_tokens(trace):
    pane = KVCachePane(trace)

    async def script(app, pilot):
        text = screen_text(app)
        assert "PREFILL step 0 · 6 prompt positions 0..5 enter the cache" in text and "4:[red]x[/red]" in text
        assert any(line.split()[:4] == ["0", "0", "6", "+6"] for line in text.splitlines())
        pane.cursor = pane.cursor.moved(step=2)
        await pilot.pause()
        text = screen_text(app)
        assert "DECODE step 2 · position 7 appended to a cache of 7" in text and "7:\\x1b[31m" in text
        assert any(line.split()[:4] == ["1", "7", "8", "+1"] for line in text.splitlines())
        pane.cursor = pane.cursor.moved(step=3)
        await pilot.pause()
        assert "8:\\x07" in screen_text(app)
        assert_inert(app)

    drive(pane, script)


def test_model_overview_pane_set_trace_later(trace):
    pane = ModelOverviewPane()

    async def script(app, pilot):
        assert "no trace" in screen_text(app)
        pane.trace = trace
        await pilot.pause()
        text = screen_text(app)
        assert "grouped-query (GQA), 2 query heads per KV head" in text
        assert "5,488" in text and "tiny-synthetic-llama" in text

    drive(pane, script)


# -- the committed fixture (a real tiny Llama) -----------------------------------------------------------


@pytest.mark.parametrize("cls", [HeatmapPane, TensorInspector, LogitLensPane, KVCachePane, ModelOverviewPane])
def test_panes_on_the_real_fixture(cls):
    tr = load_trace(FIXTURE)
    pane = cls(tr)
    seen = []

    async def script(app, pilot):
        pane.cursor = pane.cursor.moved(layer=tr.model["n_layers"] - 1, head=tr.model["n_heads"] - 1)
        for i in range(len(tr.steps)):
            pane.cursor = pane.cursor.moved(step=i)
            await pilot.pause()
            seen.append(screen_text(app))
            assert_inert(app)
        if isinstance(pane, HeatmapPane):
            pane.focus()
            await pilot.press("s")
            assert pane.last_map.n_rows == tr.steps[-1].positions[1]

    drive(pane, script, size=(100, 30))
    assert len(seen) == len(tr.steps) and all(text.strip() for text in seen)
    if cls is KVCachePane:
        assert "[red]x[/red]" not in seen[0] and "4:[" in seen[0]  # the fixture prompt spells it byte by byte
