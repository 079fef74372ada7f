"""The panes on real tiny traces of each family: window cells in the heatmap, local/global KV
cache rows, the family's data flow in the model overview, MoE routing in the tensor detail."""

import pytest

from stepscope.tui.render.palette import MASKED_RGB, PALETTE_RGB, WINDOW_RGB
from stepscope.tui.views.heatmap import ZOOMS
from stepscope.tui.widgets.heatmap import HeatmapPane
from stepscope.tui.widgets.kv_cache import KVCachePane
from stepscope.tui.widgets.model_overview import ModelOverviewPane
from stepscope.tui.widgets.tensor_detail import TensorDetail
from stepscope.tui.widgets.tensor_inspector import TensorInspector
from stepscope.tui.widgets.tensor_list import TensorList
from tests.support.family_traces import Traces
from tests.support.pane_harness import assert_inert, cell_colours, drive, screen_lines, screen_text


@pytest.fixture(scope="module")
def fam(tmp_path_factory):
    return Traces(tmp_path_factory.mktemp("families"))


def test_heatmap_draws_window_cells_apart_from_causal_cells(fam):
    pane = HeatmapPane(fam["mistral"])
    pane.level = ZOOMS.index((1, 1))  # one character per key: cell-exact assertions

    async def script(app, pilot):
        await pilot.pause()
        row4 = [fg for ch, fg, _ in cell_colours(app, 4 + 4) if ch == "▀"]  # 4 lines above row 0
        assert len(row4) == 8
        assert row4[0] == WINDOW_RGB  # row 4, key 0: outside the window of 4
        assert all(fg in PALETTE_RGB for fg in row4[1:5])  # keys 1..4 attended
        assert all(fg == MASKED_RGB for fg in row4[5:])  # keys 5..7: causal mask
        row5 = [fg for ch, fg, _ in cell_colours(app, 4 + 5) if ch == "▀"]
        assert row5[0] == WINDOW_RGB and row5[1] == WINDOW_RGB  # row 5: keys 0, 1 outside
        text = screen_text(app)
        assert "masked" in text and "outside window 4" in text

    drive(pane, script, size=(80, 24))


def test_heatmap_decode_on_a_local_layer_labels_key_positions(fam):
    pane = HeatmapPane(fam["gemma3"])

    async def script(app, pilot):
        pane.cursor = pane.cursor.moved(step=2)
        await pilot.pause()
        header = screen_lines(app)[0]
        assert "step 2 decode · q 9 · k 6–9 of 10 · window 4" in header
        assert pane.last_map.values.shape == (1, 4)
        pane.cursor = pane.cursor.moved(layer=1)  # global layer: every key
        await pilot.pause()
        assert "k 0–9 of 10" in screen_lines(app)[0] and "window" not in screen_lines(app)[0]
        assert_inert(app)

    drive(pane, script, size=(100, 20))


def test_kv_cache_pane_local_and_global_layers(fam):
    pane = KVCachePane(fam["gemma2"])

    async def script(app, pilot):
        pane.cursor = pane.cursor.moved(step=2)
        await pilot.pause()
        text = screen_text(app)
        assert "window 4: local layers keep the last 3, global all" in text
        rows = [line.split() for line in text.splitlines()]
        assert ["layer", "before", "after", "+new", "K", "V", "keys", "read", "kind", "evicted"] in rows
        assert any(r[:4] == ["0", "3", "3", "+1"] and "local" in r and "(6..9)" in r for r in rows)
        assert any(r[:4] == ["1", "9", "10", "+1"] and "global" in r and "(0..9)" in r for r in rows)
        assert_inert(app)

    drive(pane, script, size=(120, 20))


@pytest.mark.parametrize("key,expected", [
    ("gpt_neox", ["resid_post = resid_pre + attn_out + mlp_out (no resid_mid)", "not applicable",
                  "hook_resid_mid, mlp.hook_pre_linear"]),
    ("gemma2", ["resid_mid = resid_pre + ln1_post", "local (window 4): 0", "global (all positions): 1",
                "family extras recorded", "ln1_post.hook_scale, ln1_post.hook_normalized, ln1_post.hook_out"]),
    ("mixtral", ["router_probs = softmax(ln2·W_router)", "4, top-2 per token, weights renormalised",
                 "mlp.hook_router_probs, mlp.hook_expert_ids"]),
    ("starcoder2", ["generic fallback: 14 names not recorded", "not recorded (14 names; generic fallback",
                    "hook_attn_out, hook_resid_mid"]),
])
def test_model_overview_shows_the_family(fam, key, expected):
    pane = ModelOverviewPane(fam[key])
    lines = []

    async def script(app, pilot):
        lines.extend(pane.plain_lines)

    drive(pane, script, size=(140, 30))
    text = "\n".join(lines)
    for piece in expected:
        assert piece in text, piece
    assert ("not applicable (this family has no such tensor)" in text) == (key in ("gpt_neox", "mixtral"))
    assert ("family extras recorded" in text) == (key in ("gemma2", "mixtral"))


def test_tensor_detail_shows_moe_routing(fam):
    tr = fam["mixtral"]
    pane = TensorInspector(tr)
    ids = tr.steps[0]["blocks.1.mlp.hook_expert_ids"]  # [8, 2]

    async def script(app, pilot):
        detail = app.query_one(TensorDetail)
        assert detail.has_class("-moe")
        tensors = app.query_one(TensorList)
        tensors.select_name("blocks.1.mlp.hook_expert_ids")
        await pilot.pause()
        text = screen_text(app)
        assert "top-2(router_probs [8, 4]) → expert_ids [8, 2]" in text
        assert "L1 routing of 7:e (last of 8): top-2" in text and "(weights renormalised)" in text
        assert text.count("◀ chosen") == 2
        last = [line for line in text.splitlines() if line.strip().startswith("7:e → experts")]
        assert len(last) == 1 and all(f"e{int(e)} (" in last[0] for e in ids[7])
        tensors.select_name("blocks.1.hook_mlp_out")
        await pilot.pause()
        text = screen_text(app)
        assert "Σ over the top-2 of 4 experts" in text and text.count("◀ chosen") == 2
        assert "per position" not in text
        tensors.select_name("blocks.1.attn.hook_q")
        await pilot.pause()
        assert "routing" not in screen_text(app)
        assert_inert(app)

    drive(pane, script, size=(120, 40))


def test_browsing_a_window_pattern_says_where_keys_start(fam):
    pane = TensorInspector(fam["mistral"])

    async def script(app, pilot):
        pane.cursor = pane.cursor.moved(step=2)
        tensors = app.query_one(TensorList)
        tensors.focus()
        tensors.select_name("blocks.0.attn.hook_pattern")
        await pilot.press("enter")
        assert "key column j = position 6 + j" in screen_text(app)

    drive(pane, script, size=(140, 30))


def test_tensor_detail_stays_small_without_experts(fam):
    pane = TensorInspector(fam["gemma2"])

    async def script(app, pilot):
        await pilot.pause()
        detail = app.query_one(TensorDetail)
        assert not detail.has_class("-moe") and detail.outer_size.height == 7

    drive(pane, script, size=(100, 30))


def test_layers_list_shows_the_chosen_experts(fam):
    from stepscope.tui.views.mlp import routing
    from stepscope.tui.widgets.layers import LayersList

    trace = fam["mixtral"]
    pane = LayersList(trace)

    seen = {}

    async def script(app, pilot):
        pane.cursor = pane.cursor.moved(step=1)
        await pilot.pause()
        seen["text"] = screen_text(app)

    drive(pane, script)
    text = seen["text"]
    assert "experts" in text.splitlines()[0]
    for layer in range(trace.model["n_layers"]):
        chosen = routing(trace, 1, layer).chosen
        expected = ",".join(f"e{c.expert}" for c in chosen)
        ids = trace.steps[1][f"blocks.{layer}.mlp.hook_expert_ids"][-1]  # [top_k] of the last position
        assert sorted(int(i) for i in ids) == sorted(c.expert for c in chosen)
        assert expected in text.splitlines()[layer + 1]


def test_layers_list_has_no_experts_column_on_dense_models(fam):
    from stepscope.tui.widgets.layers import LayersList

    seen = {}

    async def script(app, pilot):
        await pilot.pause()
        seen["text"] = screen_text(app)

    drive(LayersList(fam["llama"]), script)
    assert "lens" in seen["text"] and "experts" not in seen["text"]
