"""Activation patching sweeps and attribution patching, checked cell by cell against an independent
forward with plain transformers hooks (the model's own attention, no cache, no stepscope code)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from stepscope.tracer import load_trace
from stepscope.tracer.patch_format import PatchingError, check_pair
from stepscope.tracer.patching import sweep
from stepscope.tracer.session import GenerationSettings, LiveSession
from tests.support.tiny_models import byte_tokenizer, tiny_model

CLEAN, CORRUPT = "The cat sat", "The dog ran"  # same token length (byte tokenizer), different next tokens
TOL = 1e-4


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    model, tok = tiny_model("llama"), byte_tokenizer()
    root = tmp_path_factory.mktemp("patching")
    traces = []
    for name, prompt in (("clean", CLEAN), ("corrupt", CORRUPT)):
        s = LiveSession(model, tok, prompt, GenerationSettings(max_new_tokens=2, chat=False), out=str(root / name))
        s.run()
        s.close()
        traces.append(load_trace(str(root / name)))
    return model, traces[0], traces[1]


def _layer_input(args, kwargs):
    return args[0] if args else kwargs["hidden_states"]


def _forward(model, ids, layer=None, where=None, edit=None):
    """[vocab] logits at the last position of one plain forward; `edit(t)` changes the tensor at `where`
    of block `layer` in place ("resid_pre": the decoder layer's input, "attn_out" / "mlp_out": the
    attention / MLP output, "z": the input of the attention's output projection)."""
    handles = []
    if layer is not None:
        block = model.model.layers[layer]
        if where == "resid_pre":
            def pre(module, args, kwargs):
                h = _layer_input(args, kwargs).clone()
                edit(h)
                if args:
                    return (h, *args[1:]), kwargs
                return args, {**kwargs, "hidden_states": h}
            handles.append(block.register_forward_pre_hook(pre, with_kwargs=True))
        elif where == "z":
            def pre_o(module, args):
                x = args[0].clone()
                edit(x)
                return (x, *args[1:])
            handles.append(block.self_attn.o_proj.register_forward_pre_hook(pre_o))
        else:
            module = block.self_attn if where == "attn_out" else block.mlp

            def post(module, args, output):
                edit(output[0] if isinstance(output, tuple) else output)
            handles.append(module.register_forward_hook(post))
    try:
        with torch.no_grad():
            return model(input_ids=torch.tensor([ids])).logits[0, -1].double()
    finally:
        for h in handles:
            h.remove()


def _capture(model, ids, layer, where):
    """The tensor at `where` of block `layer` in a plain forward over `ids` ([T, ...])."""
    got = {}

    def keep(t):
        got["t"] = t[0].clone()

    _forward(model, ids, layer, where, keep)
    return got["t"]


def _reference(model, clean, corrupt, step, site, cells):
    """The normalised metric of each (layer, column) cell by plain hooks."""
    n = clean.prompt_len + step
    cid, rid = [t["id"] for t in clean.tokens[:n]], [t["id"] for t in corrupt.tokens[:n]]
    c_tok, r_tok = clean.tokens[n]["id"], corrupt.tokens[n]["id"]
    def metric(logits):
        return float(logits[c_tok] - logits[r_tok])

    m_clean, m_corrupt = metric(_forward(model, cid)), metric(_forward(model, rid))
    where = "z" if site == "head" else site
    d = int(clean.model["d_head"])
    out = []
    for layer, column in cells:
        source = _capture(model, cid, layer, where)

        def edit(t, layer=layer, column=column, source=source):
            if site == "head":
                t[0, -1, column * d:(column + 1) * d] = source[-1, column * d:(column + 1) * d]
            else:
                t[0, column] = source[column]

        out.append((metric(_forward(model, rid, layer, where, edit)) - m_corrupt) / (m_clean - m_corrupt))
    return np.array(out)


@pytest.mark.parametrize("site,step", [("resid_pre", 0), ("attn_out", 0), ("mlp_out", 0), ("head", 0), ("resid_pre", 1)])
def test_sweep_matches_an_independent_hooked_forward(pair, site, step):
    model, clean, corrupt = pair
    result = sweep(model, clean, corrupt, site=site, step=step)
    n_layers = int(clean.model["n_layers"])
    width = int(clean.model["n_heads"]) if site == "head" else clean.prompt_len + step
    assert result.values.shape == (n_layers, width) and np.isfinite(result.values).all()
    rng = np.random.default_rng(0)
    cells = [(int(rng.integers(n_layers)), int(rng.integers(width))) for _ in range(5)] + [(0, width - 1), (n_layers - 1, 0)]
    want = _reference(model, clean, corrupt, step, site, cells)
    got = np.array([result.cell(*c) for c in cells])
    np.testing.assert_allclose(got, want, rtol=0, atol=TOL)
    assert result.clean_token["id"] == clean.tokens[clean.prompt_len + step]["id"]


def test_positions_before_the_first_difference_restore_nothing_and_the_first_layer_restores_all(pair):
    model, clean, corrupt = pair
    result = sweep(model, clean, corrupt, site="resid_pre")
    same = [p for p in range(clean.prompt_len) if clean.tokens[p]["id"] == corrupt.tokens[p]["id"]]
    first_diff = min(p for p in range(clean.prompt_len) if p not in same)
    np.testing.assert_allclose(result.values[:, :first_diff], 0, atol=1e-5)  # same tokens, same residuals there
    assert result.layers == int(clean.model["n_layers"])


def test_the_cached_sweep_equals_a_naive_rerun_per_cell(pair):
    model, clean, corrupt = pair
    for site in ("resid_pre", "head"):
        fast = sweep(model, clean, corrupt, site=site, batch=3)
        naive = sweep(model, clean, corrupt, site=site, naive=True)
        np.testing.assert_allclose(fast.values, naive.values, rtol=0, atol=1e-5)
        assert fast.extra["forwards"] < naive.extra["forwards"]


def test_attribution_is_the_first_order_estimate(pair):
    model, clean, corrupt = pair
    result = sweep(model, clean, corrupt, site="resid_pre", method="attribution")
    n = clean.prompt_len
    cid, rid = [t["id"] for t in clean.tokens[:n]], [t["id"] for t in corrupt.tokens[:n]]
    c_tok, r_tok = clean.tokens[n]["id"], corrupt.tokens[n]["id"]
    span = result.clean_metric - result.corrupt_metric
    for layer in (0, 1):
        delta = _capture(model, cid, layer, "resid_pre") - _capture(model, rid, layer, "resid_pre")  # [T, d_model]
        leaf = {}
        block = model.model.layers[layer]

        def pre(module, args, kwargs, leaf=leaf):
            h = _layer_input(args, kwargs).detach().requires_grad_(True)
            leaf["h"] = h
            return ((h, *args[1:]), kwargs) if args else (args, {**kwargs, "hidden_states": h})

        handle = block.register_forward_pre_hook(pre, with_kwargs=True)
        try:
            logits = model(input_ids=torch.tensor([rid])).logits[0, -1]
            (grad,) = torch.autograd.grad(logits[c_tok] - logits[r_tok], [leaf["h"]])
        finally:
            handle.remove()
        want = (delta.double() * grad[0].double()).sum(-1).numpy() / span
        np.testing.assert_allclose(result.values[layer], want, rtol=0, atol=TOL)
    patched = sweep(model, clean, corrupt, site="resid_pre")
    assert np.corrcoef(result.values.ravel(), patched.values.ravel())[0, 1] > 0.5
    assert not any(p.grad is not None for p in model.parameters())  # the estimate leaves no parameter gradients


def test_refusals_are_one_line(pair, tmp_path):
    model, clean, corrupt = pair
    with pytest.raises(PatchingError, match="beyond"):
        check_pair(clean, corrupt, "resid_pre", 5)
    with pytest.raises(PatchingError, match="unknown site"):
        check_pair(clean, corrupt, "embed", 0)
    tok = byte_tokenizer()
    s = LiveSession(model, tok, "A longer prompt", GenerationSettings(max_new_tokens=1, chat=False), out=str(tmp_path / "long"))
    s.run()
    s.close()
    with pytest.raises(PatchingError, match="different token lengths"):
        sweep(model, clean, load_trace(str(tmp_path / "long")))
    s = LiveSession(model, tok, CLEAN, GenerationSettings(max_new_tokens=1, chat=False), out=str(tmp_path / "narrow"),
                    record=["blocks.*.hook_attn_out", "logits"])
    s.run()
    s.close()
    with pytest.raises(PatchingError, match="not recorded"):
        check_pair(load_trace(str(tmp_path / "narrow")), corrupt, "resid_pre", 0)


def test_hooks_and_attention_are_restored(pair):
    model, clean, corrupt = pair
    before = model.config._attn_implementation
    sweep(model, clean, corrupt, site="head")
    assert model.config._attn_implementation == before
    for m in model.modules():
        assert not m._forward_hooks and not m._forward_pre_hooks
        assert "_stepscope_edit_z" not in m.__dict__
