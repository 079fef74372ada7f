"""Pure data shaping of tui/views on a synthetic trace (and the committed fixture when present)."""

import os

import numpy as np
import pytest

from stepscope.tracer import load_trace
from stepscope.tracer.geometry import kv_head_of
from stepscope.tracer.names import forward_order
from stepscope.tracer.trace_format import TOKENIZER_FILE
from stepscope.tui.render.candidates import chosen_line
from stepscope.tui.views import cache
from stepscope.tui.views.candidates import candidates, settings_line, stages_line
from stepscope.tui.views.heatmap import Viewport, attention_map, extent
from stepscope.tui.views.kv_cache import kv_cache
from stepscope.tui.views.layers import entropy, fmt, head_grid, head_rows, head_stats, layer_rows
from stepscope.tui.views.logit_lens import logit_lens
from stepscope.tui.views.model_overview import human_count, model_overview
from stepscope.tui.views.ops import operation, short_name
from stepscope.tui.views.tensors import (
    axis_names,
    compute_stats,
    export_npy,
    format_number,
    slice_rows,
    summarize,
    tensor_infos,
    tensor_op,
    tensor_stats,
)
from stepscope.tui.views.vocab import token_texts
from tests.support import synthetic_trace as syn
from tests.support.paths import FIXTURE

PAT = "blocks.{}.attn.hook_pattern"


@pytest.fixture(scope="module")
def trace(tmp_path_factory):
    return load_trace(syn.build_trace(tmp_path_factory.mktemp("syn") / "trace", n_decode=4))


@pytest.fixture(scope="module")
def subset(tmp_path_factory):
    """Only block 0's residual stream and logits recorded (sampling and lens always are)."""
    path = syn.build_trace(tmp_path_factory.mktemp("sub") / "trace", n_decode=2,
                           record=["blocks.0.hook_resid_post", "logits"])
    return load_trace(path)


@pytest.fixture(scope="module")
def greedy(tmp_path_factory):
    return load_trace(syn.build_trace(tmp_path_factory.mktemp("greedy") / "trace", n_decode=1, do_sample=False))


# -- heatmap ---------------------------------------------------------------------------------------


def test_prefill_map_is_full_causal_pattern(trace):
    pattern = trace.steps[0][PAT.format(1)]  # [H, T, S]
    amap = attention_map(trace, 0, 1, 3)
    np.testing.assert_array_equal(amap.values, pattern[3])
    np.testing.assert_array_equal(amap.mask, np.triu(np.ones((6, 6), dtype=bool), k=1))
    np.testing.assert_allclose(amap.values.sum(axis=1), 1.0, rtol=1e-5)
    assert (amap.n_rows, amap.n_cols) == (6, 6) and amap.kind == "prefill" and not amap.stacked
    assert amap.vmax == pytest.approx(float(pattern[3].max()))
    assert amap.row_labels == ["<|im_start|>", "The", "·capital", "·of", "[red]x[/red]", "↵"]
    assert amap.col_labels == amap.row_labels


def test_decode_map_is_the_single_new_row(trace):
    amap = attention_map(trace, 2, 0, 1)
    row = trace.steps[2][PAT.format(0)][1]  # [1, S]
    np.testing.assert_array_equal(amap.values, row)
    assert amap.values.shape == (1, 8) and amap.row_positions == [7] and not amap.mask.any()
    assert amap.row_labels == ["\\x1b[31m"]  # escaped, inert
    assert amap.col_labels[6:] == ["·Paris", "\\x1b[31m"]


def test_stacked_map_is_lower_triangular_over_all_positions(trace):
    amap = attention_map(trace, 3, 1, 2, stack=True)
    assert (amap.n_rows, amap.n_cols) == extent(trace, 3, stack=True) == (9, 9)
    np.testing.assert_array_equal(amap.mask, np.triu(np.ones((9, 9), dtype=bool), k=1))
    np.testing.assert_array_equal(amap.values[:6, :6], trace.steps[0][PAT.format(1)][2])
    for j in (1, 2, 3):  # step j computed position 5 + j
        row = trace.steps[j][PAT.format(1)][2, 0]  # [S_j]
        np.testing.assert_array_equal(amap.values[5 + j, : row.shape[0]], row)
    assert amap.stacked and amap.row_positions == list(range(9))


def test_stacked_reads_only_the_visible_rows(trace, monkeypatch):
    from stepscope.tracer.reader import Step

    seen = []
    original = Step.__getitem__

    def spy(self, name):
        seen.append((self.index, name))
        return original(self, name)

    monkeypatch.setattr(Step, "__getitem__", spy)
    cache.clear()
    amap = attention_map(trace, 4, 0, 0, stack=True, viewport=Viewport(row0=7, col0=0, rows=2, cols=4))
    assert sorted(seen) == [(2, PAT.format(0)), (3, PAT.format(0))]
    assert amap.values.shape == (2, 4) and amap.row_positions == [7, 8]
    seen.clear()
    attention_map(trace, 4, 0, 0, stack=True, viewport=Viewport(row0=7, col0=2, rows=2, cols=4))
    assert seen == []  # rows of earlier steps never change: panning re-reads nothing


def test_viewport_clamps_and_windows(trace):
    assert Viewport(100, 100, 3, 4).clamp(6, 6) == Viewport(3, 2, 3, 4)
    assert Viewport(-5, -1, 50, 50).clamp(6, 6) == Viewport(0, 0, 6, 6)
    amap = attention_map(trace, 0, 0, 0, viewport=Viewport(1, 2, 3, 2))
    np.testing.assert_array_equal(amap.values, trace.steps[0][PAT.format(0)][0, 1:4, 2:4])
    assert amap.row_positions == [1, 2, 3] and amap.col_positions == [2, 3]
    assert amap.col_labels == ["·capital", "·of"]
    assert amap.vmax == pytest.approx(float(amap.values[~amap.mask].max()))


def test_zoom_out_pools_block_maximum_and_keeps_mask(trace):
    full = trace.steps[0][PAT.format(0)][1]  # [6, 6]
    amap = attention_map(trace, 0, 0, 1, pool=2)
    assert amap.values.shape == (3, 3) and amap.pool == 2
    assert amap.values[1, 0] == pytest.approx(full[2:4, 0:2].max())
    assert amap.mask[0, 1] and amap.mask[0, 2] and not amap.mask[1, 1]  # [0:2, 2:4] is all masked
    assert amap.row_positions == [0, 2, 4]


def test_gqa_kv_head_of():
    model = {"n_heads": 9, "n_kv_heads": 3}
    assert [kv_head_of(model, h) for h in range(9)] == [0, 0, 0, 1, 1, 1, 2, 2, 2]
    assert kv_head_of({"n_heads": 4, "n_kv_heads": 4}, 3) == 3
    assert kv_head_of({"n_heads": 4, "n_kv_heads": 1}, 3) == 0


def test_sliding_window_masks_old_keys(trace, monkeypatch):
    monkeypatch.setitem(trace.model, "sliding_window", 2)
    amap = attention_map(trace, 0, 0, 0)
    expected = np.array([[k > q or k <= q - 2 for k in range(6)] for q in range(6)])
    np.testing.assert_array_equal(amap.mask, expected)


def test_sliding_window_only_on_sliding_layers(trace, monkeypatch):
    monkeypatch.setitem(trace.model, "sliding_window", 2)
    monkeypatch.setitem(trace.model, "layer_types", ["sliding_attention", "full_attention"])
    assert attention_map(trace, 0, 0, 0).mask[5, 0] and not attention_map(trace, 0, 1, 0).mask[5, 0]
    kv = kv_cache(trace, 3)  # a sliding layer keeps window - 1 positions between steps (transformers)
    assert [(r.before, r.after) for r in kv.layers] == [(1, 1), (8, 9)]
    assert [r.kind for r in kv.layers] == ["local", "global"] and kv.mixed


def test_heatmap_none_when_pattern_not_recorded(subset):
    assert attention_map(subset, 0, 0, 0) is None
    assert attention_map(subset, 1, 1, 0, stack=True) is None


# -- tensors ---------------------------------------------------------------------------------------


def test_tensor_infos_in_forward_order_from_header(trace):
    step = trace.steps[1]
    infos = tensor_infos(trace, 1)
    names = [i.name for i in infos]
    assert names == step.names == forward_order(names)
    assert names[0] == "hook_embed" and names[-1] == "sample.candidate_cumulative"
    for info in infos:
        assert info.shape == step.shape(info.name) and info.dtype == str(step.dtype(info.name))
    summary = summarize(trace, 1, "logits")
    assert summary.info.shape == (1, 50) and summary.op == "ln_final [1, 16] × W_U [16, 50] → logits [1, 50]"
    assert summary.stats.max == pytest.approx(float(step["logits"].max()))


@pytest.mark.parametrize("name", ["hook_embed", "blocks.1.attn.hook_pattern", "logits", "logit_lens.ids"])
def test_stats_equal_numpy(trace, name):
    arr = np.asarray(trace.steps[0][name], dtype=np.float64)
    s = tensor_stats(trace, 0, name)
    assert s.min == pytest.approx(arr.min()) and s.max == pytest.approx(arr.max())
    assert s.mean == pytest.approx(arr.mean()) and s.std == pytest.approx(arr.std())
    assert s.norm == pytest.approx(np.linalg.norm(arr.ravel()))
    assert s.n_nan == s.n_inf == 0 and s.hist.sum() == arr.size and s.hist.shape == (24,)


def test_histogram_counts_match_numpy():
    values = np.repeat(np.arange(24) + 0.5, np.arange(1, 25))  # one value in the middle of each bin
    values = np.concatenate([[0.0, 24.0], values])
    s = compute_stats(values)
    expected, _ = np.histogram(values, bins=24, range=(0.0, 24.0))
    np.testing.assert_array_equal(s.hist, expected)


def test_stats_count_nan_and_inf(tmp_path):
    tr = load_trace(syn.build_trace(tmp_path / "t", n_decode=1, nan_in="blocks.0.hook_attn_out"))
    s = tensor_stats(tr, 0, "blocks.0.hook_attn_out")
    arr = np.asarray(tr.steps[0]["blocks.0.hook_attn_out"], dtype=np.float64)
    finite = arr[np.isfinite(arr)]
    assert (s.n_nan, s.n_inf, s.nonfinite) == (1, 1, 2)
    assert s.min == pytest.approx(finite.min()) and s.mean == pytest.approx(finite.mean())
    assert s.hist.sum() == finite.size


def test_stats_are_cached_per_step_and_name(trace, monkeypatch):
    import stepscope.tui.views.tensors as tensors

    calls = []
    monkeypatch.setattr(tensors, "compute_stats", lambda arr, bins=24: calls.append(arr.shape) or "stats")
    cache.clear()
    assert tensor_stats(trace, 2, "logits") == "stats"
    assert tensor_stats(trace, 2, "logits") == "stats"
    assert len(calls) == 1
    cache.clear()


def test_operation_lines_for_a_llama_step(trace):
    step = trace.steps[0]
    ops = {n: operation(step, n, trace.model) for n in step.names}
    assert ops["blocks.0.attn.hook_q"] == "ln1 [6, 16] × W_Q [16, 16] → q [6, 4, 4]"
    assert ops["blocks.0.attn.hook_k"] == "ln1 [6, 16] × W_K [16, 8] → k [6, 2, 4]"
    assert ops["hook_embed"] == "W_E [50, 16][ids [6]] → embed [6, 16]"
    assert ops["blocks.1.hook_resid_pre"] == "blocks.0.resid_post [6, 16] → resid_pre [6, 16]"
    assert ops["blocks.0.attn.hook_rot_q"] == "RoPE(q [6, 4, 4], positions 0..5) → rot_q [6, 4, 4]"
    assert ops["blocks.0.attn.hook_attn_scores"].startswith(
        "rot_q [6, 4, 4] · rot_k cache [6, 2, 4]ᵀ / √4 + causal mask → scores [4, 6, 6]")
    assert ops["blocks.0.attn.hook_pattern"] == "softmax(scores [4, 6, 6]) → pattern [4, 6, 6]"
    assert ops["blocks.0.hook_attn_out"] == "z [6, 4, 4] × W_O [16, 16] → attn_out [6, 16]"
    assert ops["blocks.0.mlp.hook_post"] == "silu(mlp_pre [6, 32]) ⊙ mlp_pre_linear [6, 32] → mlp_post [6, 32]"
    assert ops["blocks.0.hook_mlp_out"] == "mlp_post [6, 32] × W_down [32, 16] → mlp_out [6, 16]"
    assert ops["blocks.0.hook_resid_post"] == "resid_mid [6, 16] + mlp_out [6, 16] → resid_post [6, 16]"
    assert ops["logits"] == "ln_final [6, 16] × W_U [16, 50] → logits [6, 50]"
    assert "top-p=0.9" in ops["sample.candidate_probs"] and "id 8" in ops["sample.candidate_probs"]
    for name, op in ops.items():  # every name gets an operation ending in its own shape
        assert f"→ {short_name(name)} [" in op


def test_operation_at_decode_uses_cache_length(trace):
    step = trace.steps[2]  # position 7, 8 keys
    assert operation(step, "blocks.0.attn.hook_z", trace.model) == \
        "pattern [4, 1, 8] · v cache [8, 2, 4] → z [1, 4, 4] (2 query heads per KV head)"
    assert operation(step, "blocks.0.attn.hook_rot_k", trace.model) == \
        "RoPE(k [1, 2, 4], position 7) → rot_k [1, 2, 4]"


def test_operation_follows_family_flags(trace):
    model = dict(trace.model, gated_mlp=False, parallel_attn_mlp=True, norm="layernorm", act="gelu_new",
                 positional="absolute")
    step = trace.steps[0]
    assert operation(step, "blocks.0.mlp.hook_pre", model) == "ln2 [6, 16] × W_in [16, 32] + b_in → mlp_pre [6, 32]"
    assert operation(step, "blocks.0.mlp.hook_post", model) == "gelu_new(mlp_pre [6, 32]) → mlp_post [6, 32]"
    assert operation(step, "blocks.0.hook_resid_post", model) == \
        "resid_pre [6, 16] + attn_out [6, 16] + mlp_out [6, 16] → resid_post [6, 16]"
    assert operation(step, "blocks.0.ln1.hook_normalized", model).startswith("(resid_pre [6, 16] − mean) / ln1_scale [6, 1]")
    assert operation(step, "blocks.0.hook_resid_pre", model) == \
        "embed [6, 16] + pos_embed [6, 16] → resid_pre [6, 16]"
    assert operation(step, "blocks.0.attn.hook_attn_scores", model).startswith("q [6, 4, 4] · k cache")


def test_slice_rows_and_formatting(trace):
    rows = slice_rows(np.array([[1.0, -2.5], [np.nan, np.inf]]), width=8)
    assert rows == [["  1.0000", " -2.5000"], ["     nan", "    +inf"]]
    assert format_number(1234567.0, 9).strip() == "1.23e+06"
    assert axis_names("blocks.0.attn.hook_pattern", 3) == ["n_heads", "T", "S"]
    assert axis_names("unknown", 2) == ["dim0", "dim1"]


def test_export_npy_round_trip(trace, tmp_path):
    step = trace.steps[1]
    path = export_npy(step, "blocks.1.attn.hook_q", tmp_path)
    assert path == str(tmp_path / "step00001_blocks.1.attn.hook_q.npy")
    np.testing.assert_array_equal(np.load(path, allow_pickle=False), step["blocks.1.attn.hook_q"])
    named = export_npy(step, "logits", tmp_path / "mine")
    assert named.endswith("mine.npy") and np.load(named).shape == (1, 50)


# -- logit lens, KV cache, model -----------------------------------------------------------------


def test_logit_lens_rows_mark_the_chosen_token(trace):
    step = trace.steps[1]
    ids, probs = step["logit_lens.ids"], step["logit_lens.probs"]  # [n_layers, k]
    lens = logit_lens(trace, 1)
    chosen = step.token["id"]
    assert lens.chosen_id == chosen and lens.k == 5 and len(lens.rows) == 2
    for row in lens.rows:
        assert [t.id for t in row.top] == list(ids[row.layer])
        assert row.top1.prob == pytest.approx(probs[row.layer, 0])
        hits = np.flatnonzero(ids[row.layer] == chosen)
        assert row.chosen_rank == (int(hits[0]) + 1 if hits.size else None)  # 1-based
    first = next(layer for layer in range(2) if ids[layer, 0] == chosen)
    assert lens.first_top1_layer == first and lens.rows[first].first_top1
    assert sum(r.first_top1 for r in lens.rows) == 1
    assert lens.rows[1].top1.text == step.token["text"]  # text known from the trace's tokens


def test_kv_cache_lengths_bytes_and_appended(trace):
    pre = kv_cache(trace, 0)
    assert pre.kind == "prefill" and pre.positions == (0, 6)
    assert [(r.before, r.after, r.appended) for r in pre.layers] == [(0, 6, 6)] * 2
    assert [p for p, _, _ in pre.appended] == list(range(6)) and pre.appended[4][1] == "[red]x[/red]"
    dec = kv_cache(trace, 3)
    assert dec.kind == "decode" and [(r.before, r.after) for r in dec.layers] == [(8, 9)] * 2
    assert dec.appended == [(8, "\\x07", False)]
    assert dec.bytes_per_position == 2 * 2 * 4 * 4  # K+V · n_kv_heads · d_head · float32
    assert dec.layers[0].k_bytes == 9 * 2 * 4 * 4 and dec.total_bytes == 2 * 2 * 9 * 32


def test_kv_cache_sliding_window_caps_length(trace, monkeypatch):
    monkeypatch.setitem(trace.model, "sliding_window", 4)
    kv = kv_cache(trace, 3)
    assert [(r.before, r.after, r.dropped) for r in kv.layers] == [(3, 3, 1)] * 2 and kv.sliding_window == 4


def test_model_overview_facts_and_params(trace):
    ov = model_overview(trace)
    facts = dict(ov.facts)
    assert facts["attention"] == "grouped-query (GQA), 2 query heads per KV head"
    assert facts["heads"] == "4 query, 2 key/value" and facts["gated MLP"] == "yes"
    assert ov.total == trace.model["params"]["total"]
    assert sum(r.count for r in ov.params) == ov.total
    assert [r.component for r in ov.params] == ["embedding", "attention", "mlp", "norms", "lm_head"]
    assert human_count(135_000_000) == "135.0M" and human_count(999) == "999"


# -- layers, heads ---------------------------------------------------------------------------------


def test_layer_rows_match_numpy(trace):
    step = trace.steps[2]
    rows = layer_rows(trace, 2)
    assert [r.layer for r in rows] == [0, 1]
    for row in rows:
        resid = step[f"blocks.{row.layer}.hook_resid_post"][-1]  # [d_model]
        assert row.resid_norm == pytest.approx(np.linalg.norm(resid))
        last = step[PAT.format(row.layer)][:, -1, :].astype(np.float64)  # [H, S]
        ent = -(last * np.log(last)).sum(axis=-1)
        assert row.attn_entropy == pytest.approx(ent.mean())
        assert row.lens.id == int(step["logit_lens.ids"][row.layer, 0])


def test_head_rows_and_grid(trace):
    step = trace.steps[0]
    last = step[PAT.format(1)][:, -1, :]  # [H, S]
    rows = head_rows(trace, 0, 1)
    assert [r.kv_head for r in rows] == [0, 0, 1, 1]
    for r in rows:
        assert r.max_position == int(last[r.head].argmax()) and r.max_weight == pytest.approx(last[r.head].max())
        assert r.max_token == ["<|im_start|>", "The", "·capital", "·of", "[red]x[/red]", "↵"][r.max_position]
    grid = head_grid(trace, 0)
    assert grid.shape == (2, 4)
    np.testing.assert_allclose(grid[1], entropy(last))
    assert entropy(np.array([0.5, 0.5, 0.0])) == pytest.approx(np.log(2))


def test_layers_tolerate_names_not_recorded(subset):
    rows = layer_rows(subset, 1)
    assert rows[0].resid_norm is not None and rows[1].resid_norm is None
    assert rows[0].attn_entropy is None and rows[0].lens is not None  # lens is always recorded
    assert head_stats(subset, 0, 0) is None
    assert all(r.entropy is None and r.max_token is None for r in head_rows(subset, 0, 1))
    assert np.isnan(head_grid(subset, 0)).all()
    assert fmt(None) == "—" and fmt(float("nan")) == "—" and fmt(1.23456, ".2f") == "1.23"


# -- candidates ------------------------------------------------------------------------------------


def test_candidate_rows_follow_arrays_and_sampling(trace):
    step = trace.steps[0]
    c = candidates(trace, 0)
    ids = step["sample.candidate_ids"]
    assert [r.id for r in c.rows] == list(ids)
    for name, attr in (("probs", "prob"), ("temp_probs", "temp_prob"), ("raw_probs", "raw_prob"),
                       ("cumulative", "cumulative"), ("logits", "logit")):
        np.testing.assert_allclose([getattr(r, attr) for r in c.rows], step[f"sample.candidate_{name}"], rtol=1e-6)
    nucleus = step.sampling["nucleus_size"]
    assert sum(r.in_nucleus for r in c.rows) == nucleus and c.cutoff == nucleus - 1
    assert c.rows[c.chosen_index].id == step.sampling["chosen_id"] and sum(r.chosen for r in c.rows) == 1
    assert c.rows[0].text == " Paris"  # raw text; display escapes it
    assert c.settings == "T=0.8 · top-k off · top-p 0.9 · min-p 0"
    assert c.stages == "raw 50 → /T 50 → top-k 50 → top-p 5 → min-p 5 → chosen '·Paris'"
    assert c.entropy == pytest.approx(step.sampling["entropy"])
    short = candidates(trace, 0, limit=3)
    assert len(short.rows) == 3 and short.cutoff is None


def test_candidates_greedy_and_helpers(greedy):
    c = candidates(greedy, 0)
    assert c.settings == "greedy (argmax)" and c.rows[0].chosen and c.rows[0].prob == 1.0
    assert settings_line({"greedy": False, "temperature": 0.7, "top_k": 50, "top_p": 0.95, "min_p": 0.05}) == \
        "T=0.7 · top-k 50 · top-p 0.95 · min-p 0.05"
    assert stages_line({"stages": [{"name": "raw", "kept": 9}, {"name": "top_k", "kept": 3}]}) == \
        "raw 9 → top-k 3 → chosen"


def test_candidate_ranks_are_one_based_and_final_p_matches_the_header(trace):
    """The header and the table agree: ranks count from 1 and the header's p is the final p column."""
    for i in range(len(trace.steps)):
        step, c = trace.steps[i], candidates(trace, i)
        assert [r.rank for r in c.rows] == list(range(1, len(c.rows) + 1))
        row = c.rows[c.chosen_index]
        assert row.rank == step.sampling["chosen_rank"] + 1
        line = chosen_line(trace, i).plain
        assert f"rank {row.rank} " in line
        assert f"p {row.prob:.3f}" in line  # the header's number is the row's final p
        kept = np.asarray(step["sample.candidate_probs"]) > 0
        assert [r.kept for r in c.rows] == kept.tolist()
        assert c.cutoff == int(kept.sum()) - 1  # the line sits after the last kept row
        assert c.cut_label == "top-p 0.9"


def test_greedy_candidates_have_no_pipeline(greedy):
    c = candidates(greedy, 0)
    assert c.greedy and c.stages == "" and c.cutoff is None
    assert "greedy (argmax)" in chosen_line(greedy, 0).plain and "→" not in chosen_line(greedy, 0).plain


def test_vocab_texts_known_and_unknown(trace):
    texts = token_texts(trace)
    assert texts(6) == ("[red]x[/red]", False) and texts(1) == ("<|im_start|>", True)
    assert texts(49) == ("⟨49⟩", False)
    assert token_texts(trace) is texts


# -- the committed fixture (a real tiny Llama) -------------------------------------------------------


def test_views_on_the_real_fixture():
    tr = load_trace(FIXTURE)
    model = tr.model
    last = len(tr.steps) - 1
    for i in (0, last):
        step = tr.steps[i]
        start, end = step.positions
        amap = attention_map(tr, i, model["n_layers"] - 1, model["n_heads"] - 1)
        assert amap.values.shape == (end - start, end) and amap.kv_head == model["n_kv_heads"] - 1
        np.testing.assert_allclose(amap.values.sum(axis=1), 1.0, rtol=1e-4)
        for info in tensor_infos(tr, i):
            assert f"→ {short_name(info.name)} {list(info.shape)}" in tensor_op(tr, i, info.name)
        assert len(layer_rows(tr, i)) == model["n_layers"]
        c = candidates(tr, i)
        assert sum(r.in_nucleus for r in c.rows) == step.sampling["nucleus_size"]
        assert c.rows[c.chosen_index].id == step.sampling["chosen_id"]
        assert kv_cache(tr, i).layers[0].after == end
        lens = logit_lens(tr, i)
        assert len(lens.rows) == model["n_layers"]
    stacked = attention_map(tr, last, 0, 0, stack=True)
    assert stacked.n_rows == tr.steps[last].positions[1]
    ov = model_overview(tr)
    assert "tied_embeddings" not in [r.component for r in ov.params]
    assert sum(r.count for r in ov.params) == ov.total


def test_vocab_texts_from_a_saved_tokenizer(tmp_path):
    tokenizers = pytest.importorskip("tokenizers")
    path = syn.build_trace(tmp_path / "t", n_decode=1)
    vocab = {f"w{i}": i for i in range(syn.VOCAB)}
    vocab.update({"hello": 40, "[UNK]": 49})
    vocab = {k: v for k, v in vocab.items() if k not in ("w40", "w49")}
    tok = tokenizers.Tokenizer(tokenizers.models.WordLevel(vocab, unk_token="[UNK]"))
    tok.save(os.path.join(path, TOKENIZER_FILE))
    texts = token_texts(load_trace(path))
    assert texts(40) == ("hello", False)  # decoded by the trace's tokenizer
    assert texts(6) == ("[red]x[/red]", False)  # the trace's own tokens still come first


# -- heatmap: zoom levels, labels, scales, the cell readout ---------------------------------------

from stepscope.tui.views.heatmap import ZOOMS, cell_info, fit_zoom, zoom_label  # noqa: E402


def test_every_zoom_level_is_reachable_in_order():
    assert [zoom_label(i) for i in range(6)] == ["×4", "×3", "×2", "×1", "1/2", "1/4"]
    assert all(ZOOMS[i][1] <= ZOOMS[i + 1][1] for i in range(len(ZOOMS) - 1))
    assert ZOOMS[fit_zoom(6, 6, 20, 40)] == (4, 1)
    assert ZOOMS[fit_zoom(6, 12, 20, 36)] == (3, 1)
    assert ZOOMS[fit_zoom(100, 100, 20, 60)] == (1, 8)
    assert ZOOMS[fit_zoom(1, 260, 20, 70, wrap=True)] == (4, 1)  # a decode row wraps instead of pooling


def test_row_labels_name_one_query_or_a_position_range(trace):
    amap = attention_map(trace, 0, 0, 0)
    assert amap.row_names == ["0 <|im_start|>", "1 The", "2 ·capital", "3 ·of", "4 [red]x[/red]", "5 ↵"]
    assert amap.col_names[2] == "k 2 ·capital"
    pooled = attention_map(trace, 0, 0, 0, pool=4)
    assert pooled.row_names == ["0–3", "4–5"] and pooled.col_names == ["k 0–3", "k 4–5"]


def test_scale_modes(trace):
    per_map = attention_map(trace, 2, 0, 1)
    fixed = attention_map(trace, 2, 0, 1, scale="fixed")
    assert per_map.vmax == pytest.approx(float(per_map.values.max())) and per_map.vmax < 1.0
    assert fixed.vmax == 1.0 and fixed.scale == "fixed"


def test_cell_readout_matches_the_recorded_row(trace):
    pattern = trace.steps[0][PAT.format(1)][2]  # [T, S] head 2 at the prefill
    info = cell_info(trace, 0, 1, 2, 4, 1)
    assert (info.query, info.key, info.query_text, info.key_text) == (4, 1, "[red]x[/red]", "The")
    assert info.weight == pytest.approx(float(pattern[4, 1]))
    expected_rank = 1 + int(np.sum(pattern[4, :5] > pattern[4, 1]))  # independent: sort the row
    assert info.rank == expected_rank and info.n_keys == 5
    scores = trace.steps[0]["blocks.1.attn.hook_attn_scores"][2]
    assert info.score == pytest.approx(float(scores[4, 1]))
    assert "q 4" in info.line() and "k 1 The" in info.line() and f"rank {expected_rank}/5" in info.line()
    assert cell_info(trace, 0, 1, 2, 1, 4).weight is None  # key after query: masked
    later = cell_info(trace, 3, 0, 0, 7, 3)  # query 7 was computed by decode step 2
    assert later.weight == pytest.approx(float(trace.steps[2][PAT.format(0)][0, 0, 3]))


# -- tensor browser: named axes, any two axes, head slices, export beside the trace ---------------

from stepscope.tui.views.tensors import (  # noqa: E402
    SliceView,
    axis_labels,
    axis_pairs,
    default_view,
    export_array,
    export_dir_for,
    slice_filename,
    slice_label,
    view_slice,
    with_axes,
    with_index,
)


def test_axes_are_named_from_the_recorded_shape():
    assert axis_labels("blocks.0.attn.hook_q", 3) == ["position", "head", "d_head"]
    assert axis_labels("blocks.0.attn.hook_k", 3) == ["position", "kv_head", "d_head"]
    assert axis_labels("blocks.0.attn.hook_pattern", 3) == ["head", "position", "key"]
    assert axis_labels("logits", 2) == ["position", "vocab"]
    assert axis_labels("unknown", 2) == ["dim0", "dim1"]


def test_per_head_tensors_open_on_the_selected_head(trace):
    q = trace.steps[0]["blocks.1.attn.hook_q"]  # [T, n_heads, d_head]
    view = default_view("blocks.1.attn.hook_q", q.shape, head=3, kv_head=1)
    assert view == SliceView(0, 2, (0, 3, 0))
    np.testing.assert_array_equal(view_slice(q, view), q[:, 3, :])  # one head's [T, d_head]
    assert slice_label("blocks.1.attn.hook_q", q.shape, view) == "[position :, head 3, d_head :]"
    k = trace.steps[0]["blocks.1.attn.hook_k"]
    np.testing.assert_array_equal(view_slice(k, default_view("blocks.1.attn.hook_k", k.shape, 3, 1)), k[:, 1, :])
    pattern = trace.steps[0][PAT.format(1)]  # [H, T, S]
    np.testing.assert_array_equal(view_slice(pattern, default_view(PAT.format(1), pattern.shape, 2)), pattern[2])


def test_any_two_axes_of_a_3d_tensor(trace):
    q = trace.steps[0]["blocks.1.attn.hook_q"]  # [6, 4, 4]
    pairs = axis_pairs(3)
    assert sorted(pairs) == [(0, 1), (0, 2), (1, 2)] and pairs[0] == (1, 2)
    view = default_view("blocks.1.attn.hook_q", q.shape, head=2)
    for pair in pairs:  # every pair of axes gives the matching numpy slice
        v = with_axes(with_index(view, q.shape, 0, 4), pair)
        got = view_slice(q, v)
        expected = {(1, 2): q[4], (0, 2): q[:, 2, :], (0, 1): q[:, :, 0]}[pair]
        np.testing.assert_array_equal(got, expected)
    assert with_index(view, q.shape, 1, 99).index == (0, 3, 0)  # clamped
    assert view_slice(np.arange(5.0), default_view("x", (5,))).shape == (1, 5)


def test_export_goes_beside_the_trace(trace, tmp_path, monkeypatch):
    monkeypatch.delenv("STEPSCOPE_EXPORT_DIR", raising=False)
    assert export_dir_for(trace) == os.path.abspath(trace.path).rstrip(os.sep) + "-exports"
    monkeypatch.setenv("STEPSCOPE_EXPORT_DIR", str(tmp_path / "mine"))
    assert export_dir_for(trace) == str(tmp_path / "mine")  # configurable
    monkeypatch.delenv("STEPSCOPE_EXPORT_DIR")
    q = trace.steps[1]["blocks.1.attn.hook_q"]
    view = default_view("blocks.1.attn.hook_q", q.shape, head=2)
    name = slice_filename(1, "blocks.1.attn.hook_q", q.shape, view)
    assert name == "step00001_blocks.1.attn.hook_q_head2.npy"
    path = export_array(view_slice(q, view), tmp_path / "x", name)
    np.testing.assert_array_equal(np.load(path, allow_pickle=False), q[:, 2, :])
