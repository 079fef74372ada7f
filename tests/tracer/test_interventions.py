"""Interventions on live branches, checked against the weights and against an independent forward
over all the tokens (plain torch hooks, no cache, the model's own attention)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from stepscope.tracer import load_trace
from stepscope.tracer.attention import Z_EDITS
from stepscope.tracer.branch import BranchSet
from stepscope.tracer.branch_layout import BranchError, branch_path, effects
from stepscope.tracer.interventions import (
    Intervention,
    InterventionError,
    clamp_neuron,
    difference,
    mean_head,
    patch,
    scale_head,
    steer,
    zero_head,
    zero_neuron,
)
from stepscope.tracer.session import GenerationSettings, LiveSession
from tests.support.tiny_models import byte_tokenizer, tiny_model

PROMPT, OTHER = "The cat sat", "The dog ran"  # same token length (byte tokenizer)
N = 5
T0 = 2  # branch point of most tests


@pytest.fixture(scope="module")
def llama():
    return tiny_model("llama"), byte_tokenizer()


def _run(model, tok, tmp_path, interventions, step=T0, prompt=PROMPT, extra_steps=0):
    """(root trace, branch trace) for a branch of a fresh run at `step` with `interventions`."""
    root = LiveSession(model, tok, prompt, GenerationSettings(max_new_tokens=N), out=str(tmp_path / "root"))
    tree = BranchSet(root)
    root.run()
    tree.branch(step=step, interventions=interventions, parent="").run()
    tree.close()
    return load_trace(str(tmp_path / "root")), load_trace(branch_path(str(tmp_path / "root"), "b1"))


def _out_proj(model, family, layer):
    """(attention output projection module, z_flat [T, H*d] -> attn_out [T, d_model] from its weights)."""
    if family == "gpt2":
        m = model.transformer.h[layer].attn.c_proj
        return m, lambda z: z @ m.weight.detach().numpy() + m.bias.detach().numpy()
    m = model.model.layers[layer].self_attn.o_proj
    return m, lambda z: z @ m.weight.detach().numpy().T


def _reference(model, ids, hooks):
    """Logits [T, vocab] and hidden states of one forward over `ids` with plain torch hooks [(module, kind, fn)]."""
    handles = [m.register_forward_pre_hook(fn) if kind == "pre" else m.register_forward_hook(fn) for m, kind, fn in hooks]
    try:
        with torch.no_grad():
            out = model(input_ids=torch.tensor([ids]), output_hidden_states=True)
    finally:
        for h in handles:
            h.remove()
    return out.logits[0].numpy(), [h[0].numpy() for h in out.hidden_states]


def _positions(trace, first, last=None):
    """Positions computed by steps first..last (inclusive) of a trace whose steps >= 1 are decodes."""
    last = len(trace.steps) - 1 if last is None else last
    return [p for i in range(first, last + 1) for p in range(*trace.steps[i].positions)]


def _check_downstream(branch, ref_logits, first):
    for i in range(first, len(branch.steps)):
        s = branch.steps[i]
        a, b = s.positions
        np.testing.assert_allclose(s["logits"], ref_logits[a:b], rtol=1e-4, atol=1e-4, err_msg=f"step {i}")


def _no_hooks_left(model):
    """No intervention hook and no z editor remains (transformers keeps hooks of its own)."""
    for m in model.modules():
        hooks = [*m._forward_hooks.values(), *m._forward_pre_hooks.values()]
        assert not [f for f in hooks if f.__module__ == "stepscope.tracer.interventions"], type(m).__name__
        assert m not in Z_EDITS


@pytest.mark.parametrize("family", ["llama", "gpt2"])
def test_zero_head_recomputed_from_weights(tmp_path, family):
    model, tok = tiny_model(family), byte_tokenizer()
    L, h = 0, 1
    root, br = _run(model, tok, tmp_path, [zero_head(L, h, from_step=T0)])
    d = root.model["d_head"]
    s, p = br.steps[T0], root.steps[T0]
    z, z_parent = s[f"blocks.{L}.attn.hook_z"], p[f"blocks.{L}.attn.hook_z"]  # [T, H, d_head]
    assert np.all(z[:, h] == 0) and np.any(z_parent[:, h] != 0)
    others = [i for i in range(z.shape[1]) if i != h]
    np.testing.assert_allclose(z[:, others], z_parent[:, others], rtol=1e-6, atol=1e-6)  # same context upstream
    proj, from_weights = _out_proj(model, family, L)
    np.testing.assert_allclose(s[f"blocks.{L}.hook_attn_out"], from_weights(z.reshape(z.shape[0], -1)), rtol=1e-5, atol=1e-5)
    assert not np.allclose(s["logits"], p["logits"])
    assert s.intervened == [f"blocks.{L}.attn.hook_z"] and br.steps[T0 - 1].intervened == []
    assert br.manifest["branch"]["interventions"] == [
        {"kind": "zero_head", "tensor": f"blocks.{L}.attn.hook_z", "from_step": T0, "only_at_step": False, "head": h}
    ]
    edited = set(_positions(br, T0))

    def zero(module, args):  # the same ablation done independently: head h's slice of W_O's input
        x = args[0].clone()
        rows = [q for q in range(x.shape[1]) if q in edited]
        x[0, rows, h * d : (h + 1) * d] = 0
        return (x,)

    logits, _ = _reference(model, [t["id"] for t in br.tokens[:-1]], [(proj, "pre", zero)])
    _check_downstream(br, logits, T0)
    _no_hooks_left(model)


def test_zero_head_at_one_step_only(tmp_path, llama):
    model, tok = llama
    L, h = 1, 2
    root, br = _run(model, tok, tmp_path, [zero_head(L, h, from_step=T0, only=True)])
    assert np.all(br.steps[T0][f"blocks.{L}.attn.hook_z"][:, h] == 0)
    assert np.any(br.steps[T0 + 1][f"blocks.{L}.attn.hook_z"][:, h] != 0)
    assert br.steps[T0 + 1].intervened == []
    pos = br.steps[T0].positions[0]
    d = root.model["d_head"]
    proj, _ = _out_proj(model, "llama", L)

    def zero(module, args):
        x = args[0].clone()
        x[0, pos, h * d : (h + 1) * d] = 0
        return (x,)

    logits, _ = _reference(model, [t["id"] for t in br.tokens[:-1]], [(proj, "pre", zero)])
    _check_downstream(br, logits, T0)


def test_mean_and_scale_head(tmp_path, llama):
    model, tok = llama
    root = LiveSession(model, tok, PROMPT, GenerationSettings(max_new_tokens=N), out=str(tmp_path / "root"))
    tree = BranchSet(root)
    root.run()
    mean = mean_head(0, 3, root.trace, step=0, from_step=0)
    tree.branch(step=0, interventions=[mean], parent="").run()
    tree.branch(step=T0, interventions=[scale_head(0, 2, 2.5, from_step=T0)], parent="").run()
    tree.close()
    rt = load_trace(str(tmp_path / "root"))
    want = rt.steps[0]["blocks.0.attn.hook_z"][:, 3].astype(np.float64).mean(0)
    b1 = load_trace(branch_path(str(tmp_path / "root"), "b1"))
    z = b1.steps[0]["blocks.0.attn.hook_z"]
    np.testing.assert_allclose(z[:, 3], np.broadcast_to(want, z[:, 3].shape), rtol=1e-6, atol=1e-6)
    assert "over positions 0..10 (step 0 of" in b1.manifest["branch"]["interventions"][0]["source"]
    b2 = load_trace(branch_path(str(tmp_path / "root"), "b2"))
    np.testing.assert_allclose(b2.steps[T0]["blocks.0.attn.hook_z"][:, 2], 2.5 * rt.steps[T0]["blocks.0.attn.hook_z"][:, 2], rtol=1e-5)


@pytest.mark.parametrize("kind", ["zero", "clamp"])
def test_neuron_edits(tmp_path, llama, kind):
    model, tok = llama
    L, i = 1, 17
    iv = zero_neuron(L, i, from_step=T0) if kind == "zero" else clamp_neuron(L, i, 4.0, from_step=T0)
    root, br = _run(model, tok, tmp_path, [iv])
    s = br.steps[T0]
    post = s[f"blocks.{L}.mlp.hook_post"]  # [T, d_mlp]
    assert np.all(post[:, i] == (0.0 if kind == "zero" else 4.0))
    down = model.model.layers[L].mlp.down_proj.weight.detach().numpy()
    np.testing.assert_allclose(s[f"blocks.{L}.hook_mlp_out"], post @ down.T, rtol=1e-5, atol=1e-5)
    edited = set(_positions(br, T0))

    def edit(module, args):
        x = args[0].clone()
        rows = [q for q in range(x.shape[1]) if q in edited]
        x[0, rows, i] = 0.0 if kind == "zero" else 4.0
        return (x,)

    logits, _ = _reference(model, [t["id"] for t in br.tokens[:-1]], [(model.model.layers[L].mlp.down_proj, "pre", edit)])
    _check_downstream(br, logits, T0)


def test_steering_vector_from_two_traces(tmp_path, llama):
    model, tok = llama
    other = LiveSession(model, tok, OTHER, GenerationSettings(max_new_tokens=1), out=str(tmp_path / "other"))
    other.run()
    root = LiveSession(model, tok, PROMPT, GenerationSettings(max_new_tokens=N), out=str(tmp_path / "root"))
    tree = BranchSet(root)
    root.run()
    vec, source = difference(load_trace(str(tmp_path / "other")), root.trace, layer=1, position=6)
    tree.branch(step=T0, interventions=[steer(1, 3 * vec, from_step=T0, source=source)], parent="").run()
    tree.close()
    rt, br = load_trace(str(tmp_path / "root")), load_trace(branch_path(str(tmp_path / "root"), "b1"))
    s, p = br.steps[T0], rt.steps[T0]
    np.testing.assert_allclose(s["blocks.1.hook_resid_pre"], p["blocks.1.hook_resid_pre"] + 3 * vec, rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(s["blocks.0.hook_resid_post"], p["blocks.0.hook_resid_post"])  # the block before: untouched
    edited = set(_positions(br, T0))

    def add(module, args, kwargs):
        x = (args[0] if args else kwargs["hidden_states"]).clone()
        rows = [q for q in range(x.shape[1]) if q in edited]
        x[0, rows] += torch.as_tensor(3 * vec)
        return ((x, *args[1:]), kwargs) if args else (args, {**kwargs, "hidden_states": x})

    layer = model.model.layers[1]
    handle = layer.register_forward_pre_hook(add, with_kwargs=True)
    try:
        logits, _ = _reference(model, [t["id"] for t in br.tokens[:-1]], [])
    finally:
        handle.remove()
    _check_downstream(br, logits, T0)


def test_activation_patching_from_another_trace(tmp_path, llama):
    model, tok = llama
    other = LiveSession(model, tok, OTHER, GenerationSettings(max_new_tokens=1), out=str(tmp_path / "other"))
    other.run()
    source = load_trace(str(tmp_path / "other"))
    pos, name = 4, "hook_resid_post"
    iv = patch(0, name, pos, source, prompt_len=source.prompt_len)
    assert (iv.from_step, iv.only) == (0, True)
    root, br = _run(model, tok, tmp_path, [iv], step=0)
    got, parent = br.steps[0][f"blocks.0.{name}"], root.steps[0][f"blocks.0.{name}"]
    np.testing.assert_array_equal(got[pos], source.steps[0][f"blocks.0.{name}"][pos])
    keep = [q for q in range(got.shape[0]) if q != pos]
    np.testing.assert_allclose(got[keep], parent[keep], rtol=1e-6, atol=1e-6)
    np.testing.assert_array_equal(br.steps[0]["blocks.1.hook_resid_pre"], got)  # the next block reads the patched stream
    row = torch.tensor(source.steps[0][f"blocks.0.{name}"][pos])

    def replace(module, args, output):
        hidden = output[0] if isinstance(output, tuple) else output
        hidden[0, pos] = row
        return output

    logits, _ = _reference(model, [t["id"] for t in br.tokens[:-1]], [(model.model.layers[0], "post", replace)])
    _check_downstream(br, logits, 0)


def test_effect_on_the_chosen_token(tmp_path, llama):
    model, tok = llama
    root, br = _run(model, tok, tmp_path, [zero_head(1, 0, from_step=T0), zero_head(1, 1, from_step=T0)])
    first = effects(br, root)[0]
    assert first["step"] == T0 and first["same_context"] and first["intervened"] == ["blocks.1.attn.hook_z"]

    def prob(step, token):
        x = step["logits"][-1].astype(np.float64)
        e = np.exp(x - x.max())
        return e[token] / e.sum()

    tok_p = root.steps[T0].token["id"]
    assert first["parent_token"] == tok_p
    assert first["parent_token_prob"]["parent"] == pytest.approx(prob(root.steps[T0], tok_p), rel=1e-9)
    assert first["parent_token_prob"]["branch"] == pytest.approx(prob(br.steps[T0], tok_p), rel=1e-9)
    assert first["parent_token_prob"]["parent"] == pytest.approx(root.steps[T0].sampling["chosen_raw_prob"], rel=1e-5)
    assert first["parent_token_prob"]["branch"] != first["parent_token_prob"]["parent"]


@pytest.mark.parametrize("iv, message", [
    (zero_head(0, 9, from_step=1), "head 9 is out of range"),
    (zero_neuron(0, 1000, from_step=1), "neuron 1000 is out of range"),
    (zero_head(7, 0, from_step=1), "layer 7 is out of range"),
    (Intervention("patch", 0, "ln2.hook_out", from_step=1), "cannot intervene on ln2.hook_out"),
    (steer(0, np.ones(3), from_step=1), "steering vector has 3 values"),
])
def test_bad_interventions_are_refused_before_any_step(tmp_path, llama, iv, message):
    model, tok = llama
    root = LiveSession(model, tok, PROMPT, GenerationSettings(max_new_tokens=2), out=str(tmp_path / "root"))
    tree = BranchSet(root)
    root.step()
    with pytest.raises(InterventionError, match=message):
        tree.branch(step=1, interventions=[iv])
    tree.close()
    assert not (tmp_path / "root" / "branches" / "b1").exists()


def test_hooks_removed_when_the_forward_fails(tmp_path, llama, monkeypatch):
    model, tok = llama
    root = LiveSession(model, tok, PROMPT, GenerationSettings(max_new_tokens=3), out=str(tmp_path / "root"))
    tree = BranchSet(root)
    root.step()
    b = tree.branch(step=1, interventions=[zero_neuron(0, 1, from_step=1), steer(1, np.zeros(64), from_step=1)])

    def boom(self, r, start):
        raise RuntimeError("edit failed")

    monkeypatch.setattr(Intervention, "edit", boom)
    with pytest.raises(RuntimeError, match="edit failed"):
        b.step()
    tree.close()
    _no_hooks_left(model)


def test_intervention_before_the_branch_point_is_refused(tmp_path, llama):
    model, tok = llama
    root = LiveSession(model, tok, PROMPT, GenerationSettings(max_new_tokens=3), out=str(tmp_path / "root"))
    tree = BranchSet(root)
    root.run()
    with pytest.raises(BranchError, match="starts before step 2: branch at its first step"):
        tree.branch(step=2, interventions=[zero_head(0, 0, from_step=1)])
    tree.close()


@pytest.mark.parametrize("family", ["gpt_neox", "gemma2", "olmo2", "deepseek_v3", "gpt_oss", "qwen3_next", "starcoder2"])
def test_head_ablation_and_steering_on_other_families(tmp_path, family):
    """Parallel attention/MLP, post-norms and soft-caps, MLA (d_v != d_qk), attention sinks, a hybrid
    with linear attention, the generic fallback: the edit lands where recorded, upstream is untouched."""
    model, tok = tiny_model(family), byte_tokenizer()
    session = LiveSession(model, tok, PROMPT, GenerationSettings(max_new_tokens=N), out=str(tmp_path / "root"))
    L = session.writer.manifest["model"]["n_layers"] - 1
    vec = np.linspace(-1, 1, session.writer.manifest["model"]["d_model"]).astype(np.float32)
    tree = BranchSet(session)
    session.run()
    tree.branch(step=T0, parent="", interventions=[zero_head(L, 0, from_step=T0), steer(L, vec, from_step=T0)]).run()
    tree.close()
    root, br = load_trace(str(tmp_path / "root")), load_trace(branch_path(str(tmp_path / "root"), "b1"))
    s, p = br.steps[T0], root.steps[T0]
    assert np.all(s[f"blocks.{L}.attn.hook_z"][:, 0] == 0)
    np.testing.assert_allclose(s[f"blocks.{L}.hook_resid_pre"], p[f"blocks.{L}.hook_resid_pre"] + vec, rtol=1e-5, atol=1e-5)
    for name in s.names:
        if name.startswith("blocks.") and int(name.split(".")[1]) < L:
            np.testing.assert_allclose(s[name], p[name], rtol=1e-6, atol=1e-6, err_msg=name)
    assert not np.allclose(s["logits"], p["logits"])
    assert s.intervened == [f"blocks.{L}.attn.hook_z", f"blocks.{L}.hook_resid_pre"]


def test_patch_from_another_model_is_refused(tmp_path, llama):
    model, tok = llama
    other = LiveSession(tiny_model("gpt2"), tok, OTHER, GenerationSettings(max_new_tokens=1), out=str(tmp_path / "other"))
    other.run()
    root = LiveSession(model, tok, PROMPT, GenerationSettings(max_new_tokens=2), out=str(tmp_path / "root"))
    tree = BranchSet(root)
    root.run()
    iv = patch(0, "hook_resid_post", 2, load_trace(str(tmp_path / "other")), prompt_len=11)
    with pytest.raises(InterventionError, match="its values come from a trace of GPT2LMHeadModel, not of this model"):
        tree.branch(step=0, interventions=[iv])
    tree.close()
