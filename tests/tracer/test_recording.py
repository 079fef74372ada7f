"""Recorded tensors of tiny Llama (GQA) and GPT-2 models against independent recomputation
from the model's weights in numpy, and against a full no-cache forward."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from stepscope.tracer import load_trace
from stepscope.tracer.adapters.registry import adapter_for
from stepscope.tracer.attention import RECORDERS
from stepscope.tracer.recorder import Recorder
from stepscope.tracer.session import GenerationSettings, LiveSession
from tests.support.family_refs import randomize_norms
from tests.support.tiny_models import byte_tokenizer, tiny_model

PROMPT = "Hi [b]x\n"
NEW = 4
ATOL = 2e-5


def _w(t: torch.Tensor) -> np.ndarray:
    return t.detach().float().numpy()


def _softmax(x: np.ndarray) -> np.ndarray:
    x = x - np.max(x, axis=-1, keepdims=True)
    e = np.exp(x)
    return e / e.sum(-1, keepdims=True)


def _rmsnorm(x, w, eps):
    return x / np.sqrt((x.astype(np.float64) ** 2).mean(-1, keepdims=True) + eps).astype(np.float32) * w


def _layernorm(x, w, b, eps):
    mu = x.mean(-1, keepdims=True)
    var = ((x - mu) ** 2).mean(-1, keepdims=True)
    return (x - mu) / np.sqrt(var + eps) * w + b


def _check_norm(step, prefix, x, w, b, eps, centre):
    """hook_out = the module's formula; hook_scale / hook_normalized with TransformerLens's meaning."""
    x64 = x.astype(np.float64)
    if centre:
        x64 = x64 - x64.mean(-1, keepdims=True)
    scale = np.sqrt((x64**2).mean(-1, keepdims=True) + eps)  # [T, 1]
    np.testing.assert_allclose(step[prefix + ".hook_scale"], scale, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(step[prefix + ".hook_normalized"], x64 / scale, atol=1e-5)
    want = _layernorm(x, w, b, eps) if centre else _rmsnorm(x, w, eps)
    np.testing.assert_allclose(step[prefix + ".hook_out"], want, atol=1e-5)
    assert not np.allclose(step[prefix + ".hook_out"], step[prefix + ".hook_normalized"], atol=1e-3)  # the weight matters


def _rope(x: np.ndarray, positions: np.ndarray, theta: float) -> np.ndarray:
    """x [T, n, d] rotated by position (rotate-half convention), recomputed from theta."""
    d = x.shape[-1]
    inv = 1.0 / theta ** (np.arange(0, d, 2, dtype=np.float64) / d)  # [d/2]
    ang = positions[:, None].astype(np.float64) * inv[None, :]  # [T, d/2]
    cos = np.cos(np.concatenate([ang, ang], -1))[:, None, :]  # [T, 1, d]
    sin = np.sin(np.concatenate([ang, ang], -1))[:, None, :]
    half = np.concatenate([-x[..., d // 2 :], x[..., : d // 2]], -1)
    return (x * cos + half * sin).astype(np.float32)


@pytest.fixture(scope="module", params=["llama", "gpt2"])
def traced(request, tmp_path_factory):
    family = request.param
    model, tok = randomize_norms(tiny_model(family)), byte_tokenizer()
    out = tmp_path_factory.mktemp(f"trace-{family}")
    session = LiveSession(model, tok, PROMPT, GenerationSettings(max_new_tokens=NEW), out=str(out), name=f"tiny-{family}")
    while session.step() is not None:
        pass
    session.close()
    return family, model, tok, load_trace(out)


def test_trace_has_every_step_and_token(traced):
    family, model, tok, tr = traced
    assert len(tr.steps) == NEW
    assert tr.steps[0].kind == "prefill" and tr.steps[0].positions == (0, tr.prompt_len)
    for i, step in enumerate(tr.steps):
        assert step.token == tr.tokens[tr.prompt_len + i]
        if i:
            assert step.positions == (tr.prompt_len + i - 1, tr.prompt_len + i)
    assert tr.manifest["stop_reason"] == "max_new_tokens" and tr.finished


def test_greedy_tokens_equal_generate(traced):
    family, model, tok, tr = traced
    ids = torch.tensor([[t["id"] for t in tr.tokens[: tr.prompt_len]]])
    gen = model.generate(ids, max_new_tokens=NEW, do_sample=False)
    assert [t["id"] for t in tr.tokens[tr.prompt_len :]] == gen[0, ids.shape[1] :].tolist()
    assert model.config._attn_implementation != "stepscope"  # restored after tracing


def test_shapes_follow_the_contract(traced):
    family, model, tok, tr = traced
    f = tr.model
    for step in tr.steps:
        t = step.positions[1] - step.positions[0]
        s = step.positions[1]
        assert step.shape("hook_embed") == (t, f["d_model"])
        assert step.shape("blocks.1.attn.hook_q") == (t, f["n_heads"], f["d_head"])
        assert step.shape("blocks.1.attn.hook_k") == (t, f["n_kv_heads"], f["d_head"])
        assert step.shape("blocks.1.attn.hook_v") == (t, f["n_kv_heads"], f["d_head"])
        assert step.shape("blocks.0.attn.hook_pattern") == (f["n_heads"], t, s)
        assert step.shape("blocks.0.attn.hook_attn_scores") == (f["n_heads"], t, s)
        assert step.shape("blocks.0.mlp.hook_post") == (t, f["d_mlp"])
        assert step.shape("logits") == (t, f["vocab_size"])
        assert step.shape("logit_lens.ids") == (f["n_layers"], 10)
    if family == "llama":
        assert tr.model["n_kv_heads"] < tr.model["n_heads"]  # GQA really exercised
        assert "blocks.0.attn.hook_rot_q" in tr.steps[0] and "blocks.0.mlp.hook_pre_linear" in tr.steps[0]
    else:
        assert "hook_pos_embed" in tr.steps[0] and "blocks.0.attn.hook_rot_q" not in tr.steps[0]


def test_residual_sums(traced):
    _, _, _, tr = traced
    for step in tr.steps:
        for L in range(tr.model["n_layers"]):
            b = f"blocks.{L}."
            np.testing.assert_allclose(step[b + "hook_resid_mid"], step[b + "hook_resid_pre"] + step[b + "hook_attn_out"], atol=ATOL)
            np.testing.assert_allclose(step[b + "hook_resid_post"], step[b + "hook_resid_mid"] + step[b + "hook_mlp_out"], atol=ATOL)
            if L:
                np.testing.assert_array_equal(step[b + "hook_resid_pre"], step[f"blocks.{L-1}.hook_resid_post"])


def test_pattern_is_causal_softmax_of_scores(traced):
    _, _, _, tr = traced
    for step in tr.steps:
        start, end = step.positions
        for L in range(tr.model["n_layers"]):
            pat = step[f"blocks.{L}.attn.hook_pattern"]  # [H, T, S]
            scores = step[f"blocks.{L}.attn.hook_attn_scores"]
            np.testing.assert_allclose(pat.sum(-1), 1.0, atol=1e-5)
            q_pos = np.arange(start, end)[:, None]  # [T, 1]
            k_pos = np.arange(end)[None, :]  # [1, S]
            future = k_pos > q_pos  # [T, S]
            assert np.all(pat[:, future] == 0)
            assert np.all(np.isneginf(scores[:, future])) and np.all(np.isfinite(scores[:, ~future]))
            np.testing.assert_allclose(pat, _softmax(scores), atol=1e-6)


def _full_kv(tr, upto: int, L: int, which: str) -> np.ndarray:
    """Keys/values of every position up to step `upto`, gathered from each step's new positions."""
    return np.concatenate([tr.steps[i][f"blocks.{L}.attn.hook_{which}"] for i in range(upto + 1)], 0)  # [S, KV, D]


def test_attention_recomputed_from_weights(traced):
    family, model, _, tr = traced
    f = tr.model
    H, KV, D = f["n_heads"], f["n_kv_heads"], f["d_head"]
    adapter = adapter_for(model)
    for i, step in enumerate(tr.steps):
        start, end = step.positions
        positions = np.arange(start, end)
        for L, layer in enumerate(adapter.layers()):
            b = f"blocks.{L}."
            x = step[b + "ln1.hook_out"]  # [T, d_model]
            if family == "llama":
                a = layer.self_attn
                np.testing.assert_allclose(step[b + "attn.hook_q"], (x @ _w(a.q_proj.weight).T).reshape(-1, H, D), atol=ATOL)
                np.testing.assert_allclose(step[b + "attn.hook_k"], (x @ _w(a.k_proj.weight).T).reshape(-1, KV, D), atol=ATOL)
                np.testing.assert_allclose(step[b + "attn.hook_v"], (x @ _w(a.v_proj.weight).T).reshape(-1, KV, D), atol=ATOL)
                theta = model.config.rope_parameters["rope_theta"]
                np.testing.assert_allclose(step[b + "attn.hook_rot_q"], _rope(step[b + "attn.hook_q"], positions, theta), atol=1e-5)
                np.testing.assert_allclose(step[b + "attn.hook_rot_k"], _rope(step[b + "attn.hook_k"], positions, theta), atol=1e-5)
                q, kname, w_o, b_o = step[b + "attn.hook_rot_q"], "rot_k", _w(a.o_proj.weight).T, 0.0
            else:
                a = layer.attn
                qkv = x @ _w(a.c_attn.weight) + _w(a.c_attn.bias)  # Conv1D: [T, 3 * d_model]
                qh, kh, vh = np.split(qkv, 3, -1)
                np.testing.assert_allclose(step[b + "attn.hook_q"], qh.reshape(-1, H, D), atol=ATOL)
                np.testing.assert_allclose(step[b + "attn.hook_k"], kh.reshape(-1, KV, D), atol=ATOL)
                np.testing.assert_allclose(step[b + "attn.hook_v"], vh.reshape(-1, KV, D), atol=ATOL)
                q, kname, w_o, b_o = step[b + "attn.hook_q"], "k", _w(a.c_proj.weight), _w(a.c_proj.bias)
            k_all = np.repeat(_full_kv(tr, i, L, kname), H // KV, axis=1)  # [S, H, D]: KV heads repeated (GQA)
            v_all = np.repeat(_full_kv(tr, i, L, "v"), H // KV, axis=1)  # [S, H, D]
            scores = np.einsum("thd,shd->hts", q, k_all) / np.sqrt(D)  # [H, T, S]
            rec = step[b + "attn.hook_attn_scores"]
            np.testing.assert_allclose(np.where(np.isfinite(rec), rec, 0), np.where(np.isfinite(rec), scores, 0), atol=1e-5)
            z = np.einsum("hts,shd->thd", step[b + "attn.hook_pattern"], v_all)  # [T, H, D]
            np.testing.assert_allclose(step[b + "attn.hook_z"], z, atol=ATOL)
            np.testing.assert_allclose(step[b + "hook_attn_out"], z.reshape(len(z), -1) @ w_o + b_o, atol=ATOL)


def test_norms_mlp_and_logits_recomputed(traced):
    family, model, _, tr = traced
    adapter = adapter_for(model)
    w_u = _w(adapter.lm_head().weight)  # [vocab, d_model]
    for step in tr.steps:
        for L, layer in enumerate(adapter.layers()):
            b = f"blocks.{L}."
            if family == "llama":
                eps = model.config.rms_norm_eps
                _check_norm(step, b + "ln1", step[b + "hook_resid_pre"], _w(layer.input_layernorm.weight), 0, eps, False)
                _check_norm(step, b + "ln2", step[b + "hook_resid_mid"], _w(layer.post_attention_layernorm.weight), 0, eps, False)
                m, x = layer.mlp, step[b + "ln2.hook_out"]
                np.testing.assert_allclose(step[b + "mlp.hook_pre"], x @ _w(m.gate_proj.weight).T, atol=ATOL)
                np.testing.assert_allclose(step[b + "mlp.hook_pre_linear"], x @ _w(m.up_proj.weight).T, atol=ATOL)
                pre = step[b + "mlp.hook_pre"]
                np.testing.assert_allclose(step[b + "mlp.hook_post"], pre / (1 + np.exp(-pre)) * step[b + "mlp.hook_pre_linear"], atol=1e-5)
                np.testing.assert_allclose(step[b + "hook_mlp_out"], step[b + "mlp.hook_post"] @ _w(m.down_proj.weight).T, atol=ATOL)
            else:
                eps = model.config.layer_norm_epsilon
                _check_norm(step, b + "ln1", step[b + "hook_resid_pre"], _w(layer.ln_1.weight), _w(layer.ln_1.bias), eps, True)
                _check_norm(step, b + "ln2", step[b + "hook_resid_mid"], _w(layer.ln_2.weight), _w(layer.ln_2.bias), eps, True)
                m, x = layer.mlp, step[b + "ln2.hook_out"]
                np.testing.assert_allclose(step[b + "mlp.hook_pre"], x @ _w(m.c_fc.weight) + _w(m.c_fc.bias), atol=ATOL)
                pre = step[b + "mlp.hook_pre"]
                gelu_new = 0.5 * pre * (1 + np.tanh(np.sqrt(2 / np.pi) * (pre + 0.044715 * pre**3)))
                np.testing.assert_allclose(step[b + "mlp.hook_post"], gelu_new, atol=1e-5)
                np.testing.assert_allclose(step[b + "hook_mlp_out"], step[b + "mlp.hook_post"] @ _w(m.c_proj.weight) + _w(m.c_proj.bias), atol=ATOL)
        np.testing.assert_allclose(step["logits"], step["ln_final.hook_out"] @ w_u.T, atol=1e-4)
        if family == "gpt2":
            emb = _w(model.transformer.wte.weight)[[t["id"] for t in tr.tokens[slice(*step.positions)]]]
            np.testing.assert_allclose(step["hook_embed"], emb, atol=0)
            np.testing.assert_allclose(step["blocks.0.hook_resid_pre"], step["hook_embed"] + step["hook_pos_embed"], atol=1e-6)


def test_decode_steps_equal_rows_of_full_forward(traced):
    _, model, _, tr = traced
    ids = torch.tensor([[t["id"] for t in tr.tokens[:-1]]])  # the whole final sequence that was computed
    recorder = Recorder(adapter_for(model))
    with torch.no_grad(), recorder.installed():
        model(input_ids=ids, use_cache=False)
    full = {k: v.numpy() for k, v in recorder.take().items()}
    for step in tr.steps[1:]:
        start, end = step.positions
        for name in step.names:
            if name.startswith(("sample.", "logit_lens.")):
                continue
            if name.endswith("attn.hook_o_input"):  # the last row of hook_z (no family here gates z)
                if end != ids.shape[1]:
                    continue
                ref = full[name.replace("attn.hook_o_input", "attn.hook_z")][-1]
            else:
                ref = full[name]
            if name.endswith(("attn.hook_result", "attn.hook_o_input")):  # the last position only: the final step's
                if end != ids.shape[1]:
                    continue
            elif name.endswith(("hook_pattern", "hook_attn_scores")):
                ref = ref[:, start:end, :end]  # [H, 1, S]
            else:
                ref = ref[start:end]
            got = step[name]
            finite = np.isfinite(ref)
            assert np.array_equal(finite, np.isfinite(got)), name
            np.testing.assert_allclose(got[finite], ref[finite], atol=5e-5, rtol=1e-4, err_msg=name)


def test_logit_lens_last_layer_is_the_model_prediction(traced):
    _, _, _, tr = traced
    for step in tr.steps:
        lens_ids, lens_p = step["logit_lens.ids"], step["logit_lens.probs"]
        logits = step["logits"][-1]
        probs = _softmax(logits.astype(np.float64))
        assert lens_ids[-1, 0] == np.argmax(logits)
        np.testing.assert_allclose(lens_p[-1], probs[lens_ids[-1]], atol=1e-5)
        assert np.all(np.diff(lens_p, axis=1) <= 0)  # sorted per layer
        assert step.sampling["chosen_id"] == lens_ids[-1, 0]  # greedy


def test_sampling_record_matches_logits(traced):
    _, _, _, tr = traced
    for step in tr.steps:
        s = step.sampling
        probs = _softmax(step["logits"][-1].astype(np.float64))
        assert s["chosen_id"] == step.token["id"]
        assert s["chosen_rank"] == 0 and s["greedy"]
        np.testing.assert_allclose(s["chosen_raw_prob"], probs[s["chosen_id"]], atol=1e-6)
        np.testing.assert_allclose(s["raw_entropy"], -(probs * np.log(probs)).sum(), atol=1e-4)
        ids = step["sample.candidate_ids"]
        np.testing.assert_allclose(step["sample.candidate_raw_probs"], probs[ids], atol=1e-6)
        assert ids[0] == s["chosen_id"]


def test_session_leaves_no_hooks_behind():
    model, tok = tiny_model("llama"), byte_tokenizer()
    session = LiveSession(model, tok, "ab", GenerationSettings(max_new_tokens=2))
    hooked = lambda: sum("forward" in m.__dict__ for m in model.modules())  # noqa: E731 (forward wrappers)
    assert hooked() > 0 and model.config._attn_implementation == "stepscope"
    session.step()
    ids = torch.tensor([[1, 2, 3]])
    with torch.no_grad():
        model(ids)  # a forward outside step() records nothing
    assert session.recorder.tensors == {}
    session.close()
    assert hooked() == 0 and model.config._attn_implementation != "stepscope"
    assert not any(m in RECORDERS for m in model.modules())


@pytest.mark.parametrize("flat", [True, False])  # one flat copy (decode steps), or views (a step over FLAT_MAX)
def test_nonfinite_scan_flags_nan_and_inf_but_not_masked_scores(flat, monkeypatch):
    from stepscope.tracer import staging
    from stepscope.tracer.staging import HostStager, nonfinite

    if not flat:
        monkeypatch.setattr(staging, "FLAT_MAX", 0)
    stage = HostStager(torch.device("cpu"), torch.float32).stage
    ok, scores = torch.ones(2, 3), torch.tensor([[0.5, float("-inf")]])  # a masked score is -inf by design
    clean = {"a": ok, "blocks.0.attn.hook_attn_scores": scores, "ids": torch.arange(3)}
    assert nonfinite(clean) == [] and stage(clean).nonfinite == []
    bad = {"a": ok, "b": torch.tensor([1.0, float("nan")]), "c": torch.tensor([float("-inf")]),
           "blocks.1.attn.hook_attn_scores": torch.tensor([[float("inf")]])}
    assert nonfinite(bad) == ["b", "c", "blocks.1.attn.hook_attn_scores"]
    assert stage(bad).nonfinite == ["b", "c", "blocks.1.attn.hook_attn_scores"]
    for name, value in [("a", float("nan")), ("a", float("-inf")), ("blocks.0.attn.hook_attn_scores", float("nan"))]:
        one = {k: v.clone() for k, v in clean.items()}
        one[name].view(-1)[0] = value  # a single bad value anywhere in the flat buffer is found
        staged = stage(one)
        assert staged.nonfinite == [name], (name, value)
        for k, v in one.items():
            np.testing.assert_array_equal(staged.arrays()[k], v.numpy())


def test_only_modules_holding_kept_names_are_wrapped():
    from stepscope.tracer.names import NameFilter

    model = tiny_model("llama")
    adapter = adapter_for(model)
    recorder = Recorder(adapter, NameFilter(["blocks.1.hook_resid_post", "blocks.0.ln2.hook_scale"]))
    with torch.no_grad(), recorder.installed():
        wrapped = [m for m in model.modules() if "forward" in m.__dict__]
        attached = [m for m in model.modules() if m in RECORDERS]
        model(torch.tensor([[1, 2, 3]]))
    assert {id(m) for m in wrapped} == {id(adapter.layers()[1]), id(adapter.layers()[0].post_attention_layernorm)}
    assert attached == []  # no attention name kept: the traced attention records nothing
    got = recorder.take()
    assert set(got) == {"blocks.1.hook_resid_post", "blocks.0.ln2.hook_scale"} and got["blocks.0.ln2.hook_scale"].shape == (3, 1)
    assert not any("forward" in m.__dict__ for m in model.modules())  # removed again


@pytest.mark.parametrize("key", ["llama", "gpt2"])  # RMSNorm (bit-exact), LayerNorm (centred in numpy)
def test_hook_normalized_is_computed_by_the_reader_from_the_recorded_norm_input(key, tmp_path):
    """A norm's input is a tensor the trace already holds (ln1's is hook_resid_pre, ln2's
    hook_resid_mid): the file stores hook_scale only, the manifest names the input, and the
    reader's hook_normalized equals the one the tracer computes when it cannot leave it out."""
    from stepscope.tracer.session import GenerationSettings, LiveSession

    def trace(out, record=None):
        s = LiveSession(randomize_norms(tiny_model(key)), byte_tokenizer(), "Hi there", GenerationSettings(max_new_tokens=3), out=str(out), record=record)
        s.run()
        return load_trace(str(out))

    lazy = trace(tmp_path / "lazy")
    inputs = lazy.model["norm_inputs"]
    assert inputs["blocks.0.ln1"] == {"input": "blocks.0.hook_resid_pre", "kind": "rmsnorm" if key == "llama" else "layernorm"}
    assert inputs["blocks.1.ln2"]["input"] == "blocks.1.hook_resid_mid" and inputs["ln_final"]["input"] == "blocks.1.hook_resid_post"
    # only ln1's normalized and scale kept, not its input: the tracer stores normalized itself
    stored = trace(tmp_path / "stored", record=["blocks.*.ln1.hook_normalized", "blocks.*.ln1.hook_scale"])
    assert "norm_inputs" not in stored.model
    for a, b in zip(lazy.steps, stored.steps):
        for layer in range(2):
            name = f"blocks.{layer}.ln1.hook_normalized"
            assert name in a.names and name not in a._load_header() and name in b._load_header()
            assert a.shape(name) == b.shape(name) and a.dtype(name) == np.float32
            if key == "llama":
                np.testing.assert_array_equal(a[name], b[name])  # x / scale: the same division
            else:
                np.testing.assert_allclose(a[name], b[name], rtol=1e-5, atol=1e-6)
