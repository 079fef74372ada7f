"""The TUI's pure views on real tiny traces of each family (tests/support/family_traces.py): sliding
windows (Mistral, Gemma 2/3 local/global), mixture-of-experts routing (Mixtral, Qwen3-MoE), and
each family's own data flow in the operation lines and the model overview."""

import re

import numpy as np
import pytest

from stepscope.tui.views.heatmap import Viewport, attention_map, extent, key_span
from stepscope.tui.views.kv_cache import kv_cache
from stepscope.tui.views.layers import head_rows, layer_experts, layer_rows
from stepscope.tui.views.mlp import compact_choices, format_choices, mlp_routing, mlp_routing_for, routing
from stepscope.tui.views.model_overview import model_overview, spans
from stepscope.tui.views.ops import short_name
from stepscope.tui.views.tensors import tensor_infos, tensor_op
from tests.support.family_traces import Traces, trace_tiny

PAT = "blocks.{}.attn.hook_pattern"
WINDOW = 4  # tests/support/tiny_models.py: Mistral and Gemma windows; the prompt has 8 tokens, 4 steps follow
ALL = ["gpt2", "mistral", "qwen2", "qwen3", "phi3", "gemma2", "gemma3", "gpt_neox", "mixtral", "qwen3_moe", "starcoder2"]


@pytest.fixture(scope="module")
def fam(tmp_path_factory):
    return Traces(tmp_path_factory.mktemp("families"))


def texts(trace, positions):
    """Escaped token texts; a partial UTF-8 token shows its bytes (`<0xE3>`), via its piece."""
    from stepscope.tui.text import escape_for_display, token_text

    return [escape_for_display(token_text(trace.tokens[p]["text"], trace.tokens[p].get("piece"))) for p in positions]


# -- sliding windows ---------------------------------------------------------------------------------


def test_mistral_decode_row_has_only_the_window_columns(fam):
    tr = fam["mistral"]
    for i in range(1, len(tr.steps)):
        start, end = tr.steps[i].positions
        row = tr.steps[i][PAT.format(0)][2]  # [1, S] with S = min(end, window)
        amap = attention_map(tr, i, 0, 2)
        assert row.shape == (1, WINDOW) and extent(tr, i, layer=0) == (1, WINDOW)
        assert key_span(tr, i, 0) == (end - WINDOW, WINDOW) and amap.first_key == end - WINDOW
        np.testing.assert_array_equal(amap.values, row)
        assert amap.col_positions == list(range(end - WINDOW, end))  # key column j is position end - S + j
        assert amap.col_labels == texts(tr, amap.col_positions) and not amap.mask.any()
        assert amap.window == WINDOW


def test_mistral_prefill_tells_window_from_causal_mask(fam):
    tr = fam["mistral"]
    amap = attention_map(tr, 0, 1, 0)
    q, k = np.arange(8)[:, None], np.arange(8)[None, :]  # [8, 1], [1, 8]
    np.testing.assert_array_equal(amap.window_mask, k <= q - WINDOW)
    np.testing.assert_array_equal(amap.mask, (k > q) | (k <= q - WINDOW))
    pattern = tr.steps[0][PAT.format(1)][0]  # [8, 8]
    assert (pattern[amap.mask] == 0).all() and (pattern[~amap.mask] > 0).all()  # the recorded pattern agrees
    pooled = attention_map(tr, 0, 1, 0, pool=2)
    assert pooled.window_mask[3, 0] and pooled.mask[0, 1] and not pooled.window_mask[0, 1]


def test_stacked_sliding_rows_sit_at_their_key_positions(fam):
    tr = fam["mistral"]
    last = len(tr.steps) - 1
    end = tr.steps[last].positions[1]
    amap = attention_map(tr, last, 0, 1, stack=True)
    assert (amap.n_rows, amap.n_cols) == (end, end) and amap.col_positions == list(range(end))
    np.testing.assert_array_equal(amap.values[:8, :8], tr.steps[0][PAT.format(0)][1])
    for j in range(1, last + 1):
        q = tr.steps[j].positions[0]
        row = tr.steps[j][PAT.format(0)][1, 0]  # [window] keys q - 3..q
        np.testing.assert_array_equal(amap.values[q, q - WINDOW + 1 : q + 1], row)
        assert amap.window_mask[q, : q - WINDOW + 1].all() and not amap.mask[q, q - WINDOW + 1 : q + 1].any()
    window = attention_map(tr, last, 0, 1, stack=True, viewport=Viewport(row0=end - 2, col0=5, rows=2, cols=3))
    np.testing.assert_array_equal(window.values, amap.values[end - 2 :, 5:8])  # a panned window: the same cells
    np.testing.assert_array_equal(window.window_mask, amap.window_mask[end - 2 :, 5:8])


@pytest.mark.parametrize("key", ["gemma2", "gemma3"])
def test_gemma_local_layers_slide_global_layers_keep_everything(fam, key):
    tr = fam[key]
    assert tr.model["layer_types"] == ["sliding_attention", "full_attention"]
    local, full = attention_map(tr, 2, 0, 0), attention_map(tr, 2, 1, 0)  # step 2: position 9
    assert local.col_positions == [6, 7, 8, 9] and local.window == WINDOW
    assert full.col_positions == list(range(10)) and full.window is None
    assert not attention_map(tr, 0, 1, 0).window_mask.any() and attention_map(tr, 0, 0, 0).window_mask.any()
    kv = kv_cache(tr, 2)
    assert kv.mixed and [r.kind for r in kv.layers] == ["local", "global"]
    rows = {r.layer: (r.before, r.after, r.keys, r.first_key, r.dropped) for r in kv.layers}
    assert rows == {0: (WINDOW - 1, WINDOW - 1, WINDOW, 6, 1), 1: (9, 10, 10, 0, 0)}
    for r in kv.layers:  # keys read = the recorded pattern's S
        assert r.keys == tr.steps[2].shape(PAT.format(r.layer))[-1]


def test_kv_cache_of_mistral_caps_every_layer(fam):
    tr = fam["mistral"]
    pre, dec = kv_cache(tr, 0), kv_cache(tr, 1)
    assert [(r.before, r.after, r.keys, r.dropped) for r in pre.layers] == [(0, WINDOW - 1, 8, 5)] * 2
    assert [(r.before, r.after, r.keys, r.first_key) for r in dec.layers] == [(WINDOW - 1, WINDOW - 1, WINDOW, 5)] * 2
    assert not dec.mixed and dec.layers[0].k_bytes == (WINDOW - 1) * 2 * 16 * 4


def test_head_rows_give_key_positions_on_sliding_layers(fam):
    tr = fam["mistral"]
    last = tr.steps[3][PAT.format(1)][:, -1, :]  # [H, window]
    first, _ = key_span(tr, 3, 1)
    for r in head_rows(tr, 3, 1):
        assert r.max_position == first + int(last[r.head].argmax())
        assert r.max_token == texts(tr, [r.max_position])[0]


# -- mixture of experts ------------------------------------------------------------------------------


@pytest.mark.parametrize("key,renormalised", [("mixtral", True), ("qwen3_moe", False)])
def test_routing_of_the_last_position(fam, key, renormalised):
    tr = fam[key]
    for i in (0, 2):
        step = tr.steps[i]
        probs = step["blocks.1.mlp.hook_router_probs"][-1].astype(np.float64)  # [n_experts]
        ids = step["blocks.1.mlp.hook_expert_ids"][-1]  # [top_k]
        r = routing(tr, i, 1)
        assert {c.expert for c in r.chosen} == set(ids.tolist()) and len(r.chosen) == 2
        assert [c.prob for c in r.chosen] == sorted((c.prob for c in r.chosen), reverse=True)
        for c in r.chosen:
            assert c.prob == pytest.approx(probs[c.expert])
        weights = [c.weight for c in r.chosen]
        if renormalised:
            assert sum(weights) == pytest.approx(1.0)
        else:
            assert weights == [c.prob for c in r.chosen]
        assert r.renormalised is renormalised and r.position == step.positions[1] - 1
        mr = mlp_routing(tr, i, 1)
        assert [b.expert for b in mr.bars] == list(range(4)) and sum(b.chosen for b in mr.bars) == 2
        np.testing.assert_allclose([b.prob for b in mr.bars], probs)
        assert mr.n_positions == len(mr.positions) == step.positions[1] - step.positions[0]
        assert [p.position for p in mr.positions] == list(range(*step.positions))


def test_routing_per_position_list_and_layer_rows(fam):
    tr = fam["mixtral"]
    ids = tr.steps[0]["blocks.0.mlp.hook_expert_ids"]  # [8, 2]
    mr = mlp_routing_for(tr, 0, "blocks.0.mlp.hook_router_probs")
    for p, r in enumerate(mr.positions):
        assert sorted(c.expert for c in r.chosen) == sorted(ids[p].tolist())
        assert r.text == texts(tr, [p])[0]
    line = format_choices(mr.positions[0].chosen)
    assert re.fullmatch(r"e\d \(0\.\d\d\), e\d \(0\.\d\d\)", line)
    assert mlp_routing_for(tr, 0, "blocks.0.hook_mlp_out") is not None
    assert mlp_routing_for(tr, 0, "blocks.0.attn.hook_q") is None
    rows = layer_rows(tr, 1)
    assert [r.experts for r in rows] == [routing(tr, 1, layer).chosen for layer in (0, 1)]
    assert re.fullmatch(r"e\d,e\d", compact_choices(rows[0].experts)) and compact_choices(None) == ""
    assert layer_experts(fam["mistral"], 1, 0) is None
    assert all(r.experts is None for r in layer_rows(fam["mistral"], 1))
    assert mlp_routing_for(fam["mistral"], 0, "blocks.0.mlp.hook_pre") is None


def test_routing_from_router_probabilities_alone(fam, tmp_path):
    full = fam["mixtral"]
    only = trace_tiny("mixtral", tmp_path / "router-only", record=["blocks.*.mlp.hook_router_probs"])
    assert "blocks.0.mlp.hook_expert_ids" not in only.steps[0]
    for i in (0, 1):
        assert routing(only, i, 0).chosen == routing(full, i, 0).chosen  # top-k of the recorded probabilities
    assert tensor_op(only, 0, "blocks.0.mlp.hook_router_probs").startswith("softmax(ln2 [8, 64] × W_router")
    assert sum(b.chosen for b in mlp_routing(only, 0, 1).bars) == 2


def test_qwen3_moe_dense_layers_keep_the_dense_mlp(tmp_path):
    tr = trace_tiny("qwen3_moe", tmp_path / "dense0", mlp_only_layers=[0])
    assert "blocks.0.mlp.hook_post" in tr.steps[0] and "blocks.0.mlp.hook_router_probs" not in tr.steps[0]
    assert [r.experts is None for r in layer_rows(tr, 1)] == [True, False]
    assert tensor_op(tr, 0, "blocks.0.hook_mlp_out").startswith("mlp_post [8, 128] × W_down")
    assert tensor_op(tr, 0, "blocks.1.hook_mlp_out").startswith("Σ over the top-2 of 4 experts")
    assert mlp_routing_for(tr, 0, "blocks.0.mlp.hook_post") is None
    assert dict(model_overview(tr).facts)["experts"].endswith("dense MLP at layers 0")


# -- data flow: operation lines ----------------------------------------------------------------------

# short names an operation line may mention only when the family records them
FAMILY_NAMES = {"resid_mid": "hook_resid_mid", "ln1_post": "ln1_post.hook_out",
                "ln2_post": "ln2_post.hook_out", "q_normed": "attn.hook_q_normed",
                "k_normed": "attn.hook_k_normed", "rot_q": "attn.hook_rot_q", "rot_k": "attn.hook_rot_k",
                "mlp_pre_linear": "mlp.hook_pre_linear", "mlp_post": "mlp.hook_post", "mlp_pre": "mlp.hook_pre",
                "router_probs": "mlp.hook_router_probs", "pos_embed": "hook_pos_embed"}


def ops(tr, step=0, layer=0):
    return {info.name.removeprefix(f"blocks.{layer}."): tensor_op(tr, step, info.name)
            for info in tensor_infos(tr, step) if not info.name.startswith("blocks.") or
            info.name.startswith(f"blocks.{layer}.")}


@pytest.mark.parametrize("key", ALL)
def test_operations_name_only_what_the_family_has(fam, key):
    tr = fam[key]
    for i in (0, 1):
        step = tr.steps[i]
        for info in tensor_infos(tr, i):
            op = tensor_op(tr, i, info.name)
            assert op.endswith(f"→ {short_name(info.name)} {list(info.shape)}") or \
                f"→ {short_name(info.name)} {list(info.shape)}" in op
            for short, rest in FAMILY_NAMES.items():
                if re.search(rf"(?<![\w.]){short}(?!\w)", op):
                    name = rest if rest == "hook_pos_embed" else f"blocks.0.{rest}"
                    assert name in step, f"{key}: {info.name}: {op!r} mentions {short}"


def test_parallel_neox_has_no_resid_mid(fam):
    o = ops(fam["gpt_neox"])
    assert "hook_resid_mid" not in o
    assert o["hook_resid_post"] == "resid_pre [8, 64] + attn_out [8, 64] + mlp_out [8, 64] → resid_post [8, 64]"
    assert o["ln2.hook_normalized"].startswith("(resid_pre [8, 64] − mean) / ln2_scale")
    assert o["ln2.hook_out"].startswith("LayerNorm: ln2_normalized [8, 64] · w + b (parallel")
    assert "query_key_value" in o["attn.hook_q"] and "q of each head's [q|k|v]" in o["attn.hook_q"]
    assert "on the first 4 of 16 features per head" in o["attn.hook_rot_k"]
    assert o["hook_attn_out"].endswith("+ b_O → attn_out [8, 64]")
    seq = ops(fam["gpt_neox_sequential"])
    assert seq["hook_resid_post"] == "resid_mid [8, 64] + mlp_out [8, 64] → resid_post [8, 64]"


@pytest.mark.parametrize("key", ["gemma2", "gemma3"])
def test_gemma_post_norms_feed_the_residual(fam, key):
    o = ops(fam[key])
    assert o["hook_resid_mid"] == "resid_pre [8, 64] + ln1_post [8, 64] → resid_mid [8, 64]"
    assert o["hook_resid_post"] == "resid_mid [8, 64] + ln2_post [8, 64] → resid_post [8, 64]"
    assert o["ln1_post.hook_normalized"].startswith("attn_out [8, 64] / ln1_post_scale [8, 1]")
    assert o["ln1_post.hook_out"].startswith("RMSNorm: ln1_post_normalized [8, 64] · (1 + w)")
    assert o["hook_embed"] == "W_E [259, 64][ids [8]] × √d_model (8) → embed [8, 64]"
    assert o["logits"] == "3·tanh(ln_final [8, 64] × W_U [64, 259] / 3) → logits [8, 259]"
    assert "sliding-window causal mask (window 4)" in o["attn.hook_attn_scores"]
    assert "/ √16 (query_pre_attn_scalar)" in o["attn.hook_attn_scores"]
    global_scores = tensor_op(fam[key], 1, "blocks.1.attn.hook_attn_scores")
    assert "+ causal mask" in global_scores and "rot_k cache [9, 2, 16]ᵀ" in global_scores
    local_scores = tensor_op(fam[key], 1, "blocks.0.attn.hook_attn_scores")
    assert "rot_k cache [4, 2, 16]ᵀ (positions 5..8)" in local_scores
    assert local_scores.endswith("scores [4, 1, 4] (2 query heads per KV head)")
    if key == "gemma2":
        assert o["attn.hook_attn_scores"].startswith("2·tanh(rot_q [8, 4, 16] · rot_k cache")


@pytest.mark.parametrize("key", ["qwen3", "gemma3", "qwen3_moe"])
def test_qk_norms_feed_rope(fam, key):
    o = ops(fam[key])
    assert o["attn.hook_q_normed"].startswith("RMSNorm per head(q [8, 4, 16])")
    assert o["attn.hook_rot_q"].startswith("RoPE(q_normed [8, 4, 16]")
    assert o["attn.hook_rot_k"].startswith("RoPE(k_normed [8, 2, 16]")


def test_fused_and_conv1d_projections(fam):
    phi = ops(fam["phi3"])
    assert phi["attn.hook_k"] == "ln1 [8, 64] × W_QKV [64, 128] (fused qkv_proj), k part → k [8, 2, 16]"
    assert "(fused gate_up_proj), second (up) half" in phi["mlp.hook_pre_linear"]
    gpt2 = ops(fam["gpt2"])
    assert "Conv1D c_attn" in gpt2["attn.hook_q"] and "Conv1D c_fc" in gpt2["mlp.hook_pre"]
    assert gpt2["hook_resid_pre"] == "embed [8, 64] + pos_embed [8, 64] → resid_pre [8, 64]"
    assert gpt2["attn.hook_attn_scores"].startswith("q [8, 4, 16] · k cache")
    assert not any("RoPE" in op for op in gpt2.values())
    assert "+ b_Q" in ops(fam["qwen2"])["attn.hook_q"]


@pytest.mark.parametrize("key", ["mixtral", "qwen3_moe"])
def test_moe_operations(fam, key):
    o = ops(fam[key])
    assert o["mlp.hook_router_probs"] == "softmax(ln2 [8, 64] × W_router [64, 4]) → router_probs [8, 4]"
    assert o["mlp.hook_expert_ids"] == "top-2(router_probs [8, 4]) → expert_ids [8, 2]"
    assert o["hook_mlp_out"].startswith("Σ over the top-2 of 4 experts") and "W_down" not in o["hook_mlp_out"]
    assert ("renormalised" in o["hook_mlp_out"]) == (key == "mixtral")


def test_generic_fallback_operations(fam):
    o = ops(fam["starcoder2"])
    assert set(o) >= {"hook_resid_pre", "hook_resid_post"} and "ln1.hook_normalized" not in o
    assert o["hook_resid_post"] == \
        "block 0(resid_pre [8, 64]) (generic fallback: internals not recorded) → resid_post [8, 64]"
    assert o["ln_final.hook_normalized"].startswith("final norm(")
    assert "LM head" in o["logits"] and "LM head" in o["logit_lens.ids"]


# -- data flow: model overview -----------------------------------------------------------------------


@pytest.mark.parametrize("key", ALL)
def test_overview_shows_the_family_data_flow(fam, key):
    tr = fam[key]
    ov = model_overview(tr)
    assert ov.data_flow == tr.model["data_flow"] and ov.data_flow
    assert ov.missing == tr.model["missing_names"] and ov.generic == (key == "starcoder2")
    if key != "starcoder2":
        assert not any("generic" in line for line in ov.data_flow)


def test_overview_specifics(fam):
    gemma = model_overview(fam["gemma2"])
    assert gemma.layer_kinds == [("local (window 4)", "0"), ("global (all positions)", "1")]
    post = [f"{p}.{h}" for p in ("ln1_post", "ln2_post") for h in ("hook_scale", "hook_normalized", "hook_out")]
    assert gemma.extras == post and gemma.not_applicable == []
    assert any("soft-capped at 3" in n for n in gemma.notes) and any("post-norms" in n for n in gemma.notes)
    assert model_overview(fam["mistral"]).layer_kinds == [("local (window 4)", "0–1")]
    neox = model_overview(fam["gpt_neox"])
    assert neox.not_applicable == ["hook_resid_mid", "mlp.hook_pre_linear"] and neox.layer_kinds == []
    assert any("no resid_mid" in n for n in neox.notes) and any("4 of 16" in n for n in neox.notes)
    mix = model_overview(fam["mixtral"])
    assert dict(mix.facts)["experts"] == "4, top-2 per token, weights renormalised over the top-k"
    assert mix.not_applicable == ["mlp.hook_pre", "mlp.hook_pre_linear", "mlp.hook_post"]
    assert mix.extras == ["mlp.hook_router_probs", "mlp.hook_expert_ids"]
    qwen_moe = dict(model_overview(fam["qwen3_moe"]).facts)
    assert qwen_moe["experts"] == "4, top-2 per token, weights = router probabilities"
    generic = model_overview(fam["starcoder2"])
    assert len(generic.missing) == 14 and "hook_attn_out" in generic.missing and generic.extras == []
    assert "attn.hook_pattern" not in generic.missing  # recorded through the attention interface
    assert spans([0, 2, 3, 4, 7]) == "0, 2–4, 7" and spans([]) == ""
