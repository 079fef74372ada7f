"""The panes read family facts from the manifest: gpt-oss's attention-sink column drawn apart and
labelled, Qwen3-Next's linear-attention layers saying why they have no map, rows the recording
budget left out recomputed exactly (compared with a trace that stored them)."""

import warnings

import numpy as np
import pytest

from stepscope.tracer import load_trace
from stepscope.tracer.session import GenerationSettings, LiveSession
from stepscope.tui.render.palette import PALETTE_RGB, levels
from stepscope.tui.views.heatmap import ZOOMS
from stepscope.tui.widgets.heatmap import LABEL_WIDTH, HeatmapPane
from stepscope.tui.widgets.kv_cache import KVCachePane
from stepscope.tui.widgets.layers import LayersList
from tests.support.family_matrix import NEW_TOKENS, PROMPT
from tests.support.family_traces import Traces
from tests.support.pane_harness import assert_inert, cell_colours, drive, screen_lines, screen_text
from tests.support.paths import FIXTURE
from tests.support.tiny_models import byte_tokenizer, tiny_model


@pytest.fixture(scope="module")
def fam(tmp_path_factory):
    return Traces(tmp_path_factory.mktemp("families"))


def _raw(trace, step, name):
    """The stored array, read straight from the step file's safetensors (not through the views)."""
    from safetensors.numpy import load_file

    return load_file(trace.steps[step].path)[name].astype(np.float64)


def test_gpt_oss_sink_column_is_drawn_apart_and_labelled(fam):
    trace = fam["gpt_oss"]
    raw = _raw(trace, 0, "blocks.1.attn.hook_pattern")  # [n_heads, T, S + 1]
    t = raw.shape[1]
    assert raw.shape[2] == t + 1
    np.testing.assert_allclose(raw.sum(-1), 1.0, atol=1e-5)  # rows sum to 1 with the sink column
    pane = HeatmapPane(trace)
    pane.level = ZOOMS.index((1, 1))  # one character per key: cell-exact assertions

    async def script(app, pilot):
        pane.cursor = pane.cursor.moved(layer=1, head=2)
        await pilot.pause()
        header = screen_lines(app)[0]
        assert f"k 0–{t - 1} of {t}" in header and "-1" not in header  # the sink is not a key
        amap = pane.last_map
        np.testing.assert_allclose(amap.values[~amap.mask], raw[2, :, :t][~amap.mask], atol=1e-6)
        np.testing.assert_allclose(amap.sink, raw[2, :, t], atol=1e-6)
        text = screen_text(app)
        assert "sink" in screen_lines(app)[2] and "sink: mass on no key" in text  # ruler label, legend
        assert f"sink {raw[2, t - 1, t]:.4f}" in screen_lines(app)[1]  # the readout gives the cell's row its sink
        # the sink cell of row 0: one gap after the t key cells, coloured by its mass on the map's scale
        line = cell_colours(app, 4)  # header, readout, ruler, cursor label, then row 0
        first = [ch for ch, _, _ in line].index("▀")
        assert first >= LABEL_WIDTH + 1
        cells = line[first:]
        assert [ch for ch, _, _ in cells[: t + 2]] == ["▀"] * t + [" ", "▀"]
        want = levels(np.array([raw[2, 0, t]]), amap.vmin, amap.vmax)[0]
        assert cells[t + 1][1] == PALETTE_RGB[want]
        assert_inert(app)

    drive(pane, script, size=(80, 24))


def test_gpt_oss_decode_step_on_a_sliding_layer(fam):
    trace = fam["gpt_oss"]
    pane = HeatmapPane(trace)

    async def script(app, pilot):
        pane.cursor = pane.cursor.moved(step=1, layer=0)
        await pilot.pause()
        raw = _raw(trace, 1, "blocks.0.attn.hook_pattern")  # [n_heads, 1, window + 1]
        s = raw.shape[2] - 1
        header = screen_lines(app)[0]
        assert f"k {9 - s}–8 of 9" in header and "window 4" in header
        np.testing.assert_allclose(pane.last_map.sink, raw[0, :, s], atol=1e-6)
        assert any(line.strip().startswith("sink ▀") for line in screen_lines(app))

    drive(pane, script, size=(80, 20))


def test_qwen3_next_layers_without_attention_say_why(fam):
    trace = fam["qwen3_next"]
    reason = trace.model["no_attention_reason"]
    assert trace.model["layers_without_attention"] == [0] and reason
    heatmap = HeatmapPane(trace)

    async def heatmap_script(app, pilot):
        text = screen_text(app)
        assert "layer 0 has no attention map" in text and "linear-attention" in text
        assert "was not recorded" not in text
        heatmap.cursor = heatmap.cursor.moved(layer=1)
        await pilot.pause()
        assert heatmap.last_map is not None and "L1 H0" in screen_lines(app)[0]

    drive(heatmap, heatmap_script, size=(120, 20))

    async def layers_script(app, pilot):
        rows = [line.split() for line in screen_lines(app)[1:3]]
        assert rows[0][0] == "0" and rows[0][2:4] == ["no", "attn"]
        assert rows[1][0] == "1" and rows[1][2] != "no"

    drive(LayersList(trace), layers_script, size=(60, 10))

    from stepscope.tui.widgets.heads import HeadsList

    heads = HeadsList(trace)

    async def heads_script(app, pilot):
        assert "no attention heads at layer 0: linear-attention" in " ".join(screen_text(app).split())
        heads.cursor = heads.cursor.moved(layer=1)
        await pilot.pause()
        assert "no attention heads" not in screen_text(app) and screen_lines(app)[1].split()[:2] == ["0", "0"]

    drive(heads, heads_script, size=(40, 10))

    async def kv_script(app, pilot):
        text = " ".join(screen_text(app).split())
        assert "no KV cache at layer 0: linear-attention" in text
        rows = [line.split() for line in screen_lines(app)]
        assert ["0", "—", "—", "—", "no", "KV", "—"] in rows
        assert_inert(app)

    drive(KVCachePane(trace), kv_script, size=(120, 24))


def _llama():
    """The tiny Llama with random norm weights (so a norm's output differs from its normalized input)."""
    from tests.support.family_refs import randomize_norms

    return randomize_norms(tiny_model("llama"))


def _llama_trace(out, row_limit=None):
    """PROMPT + NEW_TOKENS greedy steps of the tiny Llama; `row_limit`: the budget's kept rows."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        session = LiveSession(_llama(), byte_tokenizer(), PROMPT, GenerationSettings(max_new_tokens=NEW_TOKENS),
                              out=str(out), name="tiny-llama")
        session.recorder.row_limit = row_limit
        while session.step() is not None:
            pass
        session.close()
    return load_trace(str(out))


@pytest.fixture(scope="module")
def budget_pair(tmp_path_factory):
    root = tmp_path_factory.mktemp("budget")
    return _llama_trace(root / "full"), _llama_trace(root / "cut", row_limit=3)


def test_heatmap_recomputes_rows_the_budget_left_out(budget_pair):
    full, cut = budget_pair
    t = cut.steps[0].positions[1]
    assert cut.steps[0].omitted["blocks.1.attn.hook_pattern"]["rows"] == [0, t - 3]
    want = _raw(full, 0, "blocks.1.attn.hook_pattern")  # [n_heads, T, T] every row, stored
    pane = HeatmapPane(cut)

    async def script(app, pilot):
        pane.cursor = pane.cursor.moved(layer=1, head=3, query=1, key=0)
        await pilot.pause()
        lines = screen_lines(app)
        assert f"budget: query rows 0–{t - 4} of this map were not stored" in lines[2]
        assert "recomputed" in lines[1]  # the selected row is one of them
        amap = pane.last_map
        assert amap.values.shape == (t, t) and amap.recomputed == (0, t - 3)
        np.testing.assert_allclose(amap.values[~amap.mask], want[3][~amap.mask], rtol=1e-5, atol=1e-6)
        assert f"p {want[3, 1, 0]:.4f}" in lines[1]
        pane.action_toggle_stack()  # the prefill's rows under later steps' rows
        pane.cursor = pane.cursor.moved(step=2, query=None, key=None)
        await pilot.pause()
        stacked = pane.last_map
        rows = stacked.row_positions
        got = stacked.values[[rows.index(q) for q in range(t) if q in rows]]
        np.testing.assert_allclose(got[:, :t], np.tril(want[3])[[q for q in range(t) if q in rows]], atol=1e-6)

    drive(pane, script, size=(100, 30))


def test_lens_pane_with_the_lazy_lens_equals_an_independent_unembedding(budget_pair):
    import torch

    from stepscope.tui.widgets.logit_lens import LogitLensPane

    trace = budget_pair[0]
    step = trace.steps[1]
    assert trace.lens is not None and "logit_lens.ids" not in _stored(step)  # computed at view time
    model = _llama()  # the same seeded weights the trace was recorded with
    rows = np.stack([_raw(trace, 1, f"blocks.{L}.hook_resid_post")[-1] for L in range(2)])  # [n_layers, d_model]
    with torch.no_grad():
        logits = model.lm_head(model.model.norm(torch.tensor(rows, dtype=torch.float32)))  # [n_layers, vocab]
    probs = torch.softmax(logits.double(), -1).numpy()
    pane = LogitLensPane(trace)

    async def script(app, pilot):
        pane.cursor = pane.cursor.moved(step=1)
        await pilot.pause()
        table = [line.split() for line in screen_lines(app) if line.split()[:1] in (["0"], ["1"])]
        assert len(table) == 2
        for layer, row in enumerate(table):
            assert row[2] == f"{probs[layer].max():.3f}"  # top-1 p
        ids = step["logit_lens.ids"]  # [n_layers, k] through the reader's lazy lens
        np.testing.assert_array_equal(ids[:, 0], probs.argmax(-1))

    drive(pane, script, size=(120, 20))


def test_lens_pane_on_a_schema_1_trace_shows_its_stored_lens():
    from stepscope.tui.widgets.logit_lens import LogitLensPane

    trace = load_trace(FIXTURE + "_v1")
    assert trace.manifest["schema_version"] == 1
    probs = _raw(trace, 1, "logit_lens.probs")  # [n_layers, k] as stored in the v1 step file
    pane = LogitLensPane(trace)

    async def script(app, pilot):
        pane.cursor = pane.cursor.moved(step=1)
        await pilot.pause()
        table = [line.split() for line in screen_lines(app) if line.split()[:1] in (["0"], ["1"])]
        assert [row[2] for row in table] == [f"{p:.3f}" for p in probs[:, 0]]

    drive(pane, script, size=(120, 20))


def _stored(step) -> list[str]:
    from safetensors import safe_open

    with safe_open(step.path, "np") as f:
        return list(f.keys())


async def _select(app, pilot, pane, name):
    from stepscope.tui.widgets.tensor_list import TensorList

    app.query_one(TensorList).focus()
    await pilot.pause()
    for _ in range(60):
        if pane.selected == name:
            return screen_text(app)
        await pilot.press("down")
    raise AssertionError(f"{name} not reached (at {pane.selected})")


def test_tensors_pane_norm_names_mean_what_transformerlens_means(budget_pair):
    from stepscope.tui.widgets.tensor_inspector import TensorInspector

    trace = budget_pair[0]
    x = np.asarray(trace.steps[0]["blocks.0.hook_resid_pre"], dtype=np.float64)  # [T, d_model] (an alias of hook_embed)
    model = _llama()
    w = model.model.layers[0].input_layernorm.weight.detach().double().numpy()  # [d_model]
    scale = np.sqrt((x**2).mean(-1, keepdims=True) + model.config.rms_norm_eps)  # [T, 1]
    step = trace.steps[0]
    np.testing.assert_allclose(step["blocks.0.ln1.hook_scale"], scale, rtol=1e-5)
    np.testing.assert_allclose(step["blocks.0.ln1.hook_normalized"], x / scale, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(step["blocks.0.ln1.hook_out"], x / scale * w, rtol=1e-4, atol=1e-5)
    assert not np.allclose(w, 1.0)  # hook_out and hook_normalized really differ
    pane = TensorInspector(trace)

    async def script(app, pilot):
        t, d = x.shape
        text = await _select(app, pilot, pane, "blocks.0.ln1.hook_scale")
        assert f"√(mean(resid_pre [{t}, {d}]²) + eps) → ln1_scale [{t}, 1]" in text
        text = await _select(app, pilot, pane, "blocks.0.ln1.hook_normalized")
        assert f"resid_pre [{t}, {d}] / ln1_scale [{t}, 1] → ln1_normalized [{t}, {d}]" in text
        text = await _select(app, pilot, pane, "blocks.0.ln1.hook_out")
        assert f"RMSNorm: ln1_normalized [{t}, {d}] · w → ln1 [{t}, {d}]" in text

    drive(pane, script, size=(120, 40))


def test_tensors_pane_on_a_schema_1_trace_shows_the_norm_output_as_hook_out():
    from stepscope.tui.widgets.tensor_inspector import TensorInspector

    trace = load_trace(FIXTURE + "_v1")
    step = trace.steps[0]
    stored = _stored(step)
    assert "blocks.0.ln1.hook_normalized" in stored  # v1's name for the module output
    assert "blocks.0.ln1.hook_normalized" not in step.names and "blocks.0.ln1.hook_scale" not in step.names
    np.testing.assert_array_equal(step["blocks.0.ln1.hook_out"], _raw(trace, 0, "blocks.0.ln1.hook_normalized"))
    pane = TensorInspector(trace)

    async def script(app, pilot):
        text = await _select(app, pilot, pane, "blocks.0.ln1.hook_out")
        assert "→ ln1 [" in text and "ln1.hook_normalized" not in text

    drive(pane, script, size=(120, 40))


def test_budget_rows_of_a_model_with_sinks_are_refused_in_one_line(tmp_path):
    """gpt-oss's sink logits are not recorded, so omitted rows cannot be recomputed from q and k:
    the heatmap says so instead of failing (and `stepscope trace` does not trim such maps)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        session = LiveSession(tiny_model("gpt_oss"), byte_tokenizer(), PROMPT, GenerationSettings(max_new_tokens=1),
                              out=str(tmp_path / "cut"), name="tiny-gpt-oss")
        session.recorder.row_limit = 3
        while session.step() is not None:
            pass
        session.close()
    trace = load_trace(str(tmp_path / "cut"))
    assert trace.steps[0].omitted
    pane = HeatmapPane(trace)

    async def script(app, pilot):
        assert "attention with sinks cannot be recomputed from q and k" in screen_text(app)
        assert getattr(app, "last_error", None) is None

    drive(pane, script, size=(100, 20))


def test_tensor_browser_labels_the_sink_column_and_the_stored_rows(fam, budget_pair):
    from stepscope.tui.widgets.tensor_browser import TensorBrowser

    trace = fam["gpt_oss"]
    browser = TensorBrowser()

    async def sink_script(app, pilot):
        browser.open(trace.steps[0], "blocks.1.attn.hook_pattern", head=0, trace=trace)
        await pilot.pause()
        text = screen_text(app)
        header = next(line for line in screen_lines(app) if " 0 H" in line)
        assert header.split()[-1] == "sink" and "7 e" in header  # keys 0..7, then the sink
        assert "last column = attention sink" in text

    drive(browser, sink_script, size=(160, 20))
    cut = budget_pair[1]
    t = cut.steps[0].positions[1]
    browser2 = TensorBrowser()

    async def rows_script(app, pilot):
        browser2.open(cut.steps[0], "blocks.0.attn.hook_pattern", head=0, trace=cut)
        await pilot.pause()
        labels = [line.split()[0] for line in screen_lines(app)[4:7]]  # the 3 stored rows: the last 3 positions
        assert labels == [str(p) for p in range(t - 3, t)], screen_text(app)

    drive(browser2, rows_script, size=(160, 20))


def test_op_lines_of_a_model_with_sinks(fam):
    from stepscope.tui.views.ops import operation

    trace = fam["gpt_oss"]
    step = trace.steps[1]  # decode on the sliding layer 0: 4 keys in the window + the sink
    assert operation(step, "blocks.0.attn.hook_pattern", trace.model) == \
        "softmax(scores [4, 1, 5]) → pattern [4, 1, 5] (last column: mass on the sink)"
    assert operation(step, "blocks.0.attn.hook_z", trace.model).startswith("pattern[..., :4] [4, 1, 4] · v cache [4, 2, 16]")
    assert "‖ the sink's logit (last column) → scores [4, 1, 5]" in operation(step, "blocks.0.attn.hook_attn_scores", trace.model)


def test_op_lines_of_linear_attention_and_gated_attention_blocks(fam):
    from stepscope.tui.views.ops import operation

    trace = fam["qwen3_next"]
    step = trace.steps[1]
    op = lambda name: operation(step, name, trace.model)  # noqa: E731
    assert op("blocks.0.hook_attn_out") == \
        "(RMSNorm(core_out [1, 4, 8]) ⊙ silu(gate [1, 4, 8])) × W_out → attn_out [1, 64] (linear attention: no attention map)"
    assert op("blocks.0.linear_attn.hook_gate") == "ln1 [1, 64] × W_z (output gate, before silu) → linear_attn.gate [1, 4, 8]"
    assert op("blocks.0.linear_attn.hook_state").endswith("→ linear_attn.state [4, 8, 8]")
    assert op("blocks.0.linear_attn.hook_core_out").startswith("gated delta rule")
    assert op("blocks.1.hook_attn_out") == "(z [1, 4, 16] ⊙ σ(gate)) × W_O [64, 64] → attn_out [1, 64]"


def test_tensors_pane_says_which_rows_the_budget_left_out(budget_pair):
    from stepscope.tui.widgets.tensor_inspector import TensorInspector

    cut = budget_pair[1]
    t = cut.steps[0].positions[1]
    pane = TensorInspector(cut)

    async def script(app, pilot):
        text = await _select(app, pilot, pane, "blocks.0.attn.hook_pattern")
        assert f"budget: query rows 0–{t - 4} not stored (only the last 3)" in " ".join(text.split())

    drive(pane, script, size=(140, 40))


@pytest.mark.parametrize("which", ["gpt_oss", "qwen3_next", "budget", "schema1"])
def test_every_pane_of_the_app_opens_on_family_facts(fam, budget_pair, which):
    """The whole app on traces whose facts differ (sinks, layers without attention, omitted rows,
    schema 1): every pane shown at every layer of two steps, no error dialog."""
    import asyncio

    from stepscope.tui.app import StepscopeApp

    trace = {"gpt_oss": lambda: fam["gpt_oss"], "qwen3_next": lambda: fam["qwen3_next"],
             "budget": lambda: budget_pair[1], "schema1": lambda: load_trace(FIXTURE + "_v1")}[which]()
    app = StepscopeApp(trace=trace)

    async def main():
        async with app.run_test(size=(100, 30)) as pilot:
            await pilot.pause()
            for pane in "1234567":
                await pilot.press(pane, "j", "n", "k", "p")
                await pilot.pause()
                assert app.last_error is None, (pane, app.last_error)
            await pilot.press("2", "n", "s", "j")
            await pilot.pause()
            assert app.last_error is None, app.last_error

    asyncio.run(main())


def test_kv_cache_bytes_of_mla_use_each_tensors_head_size(fam):
    """DeepSeek-V3 (MLA): V has its own head size (fact d_head_v), so K and V bytes differ; both
    equal what the recorded k and v of every position so far take."""
    from stepscope.tui.views.kv_cache import kv_cache

    trace = fam["deepseek_v3"]
    end = trace.steps[1].positions[1]
    k = _raw(trace, 1, "blocks.0.attn.hook_rot_k")  # [1, n_kv_heads, d_qk] the new position's key
    v = _raw(trace, 1, "blocks.0.attn.hook_v")  # [1, n_kv_heads, d_v]
    itemsize = np.dtype(trace.manifest["dtype"]["stored"]).itemsize
    kv = kv_cache(trace, 1)
    assert k.shape[2] != v.shape[2]
    assert kv.layers[0].k_bytes == end * k.shape[1] * k.shape[2] * itemsize
    assert kv.layers[0].v_bytes == end * v.shape[1] * v.shape[2] * itemsize
    assert kv.bytes_per_position == (k[0].size + v[0].size) * itemsize


def test_op_lines_of_latent_attention(fam):
    """DeepSeek-V3 (MLA, from its facts): the latents, q and v from them, RoPE on the last features,
    and v/z with their own head size (not q/k's)."""
    from stepscope.tui.views.ops import operation

    trace = fam["deepseek_v3"]
    step = trace.steps[1]
    op = lambda name: operation(step, name, trace.model)  # noqa: E731
    dv = step.shape("blocks.0.attn.hook_v")[2]
    assert op("blocks.0.attn.hook_q_latent") == "RMSNorm(ln1 [1, 64] × W_DQ [64, 24]) → q_latent [1, 24]"
    assert op("blocks.0.attn.hook_q").startswith("q_latent [1, 24] × W_UQ [24, 96] = [q_nope 16 | q_pe 8]")
    assert "RoPE on the last 8 of 24 features" in op("blocks.0.attn.hook_rot_q")
    assert op("blocks.0.attn.hook_z") == f"pattern [4, 1, 9] · v cache [9, 4, {dv}] → z [1, 4, {dv}]"
    assert op("blocks.0.hook_attn_out") == f"z [1, 4, {dv}] × W_O [{4 * dv}, 64] → attn_out [1, 64]"
