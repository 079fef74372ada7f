"""Direct logit attribution: the parts and bias terms sum to the logit difference the model itself
produced (its recorded LM-head output), on every family of tests/support/family_matrix.py; each head's
`attn.hook_result` row equals z·W_O recomputed from the model's weights."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from stepscope.tracer import load_trace
from stepscope.tracer.attribution import attribute
from stepscope.tracer.session import GenerationSettings, LiveSession
from stepscope.tracer.trace_format import TraceError
from tests.support.family_matrix import FAMILIES, GENERIC, PROMPT, VARIANT_FAMILIES
from tests.support.family_refs import randomize_norms
from tests.support.tiny_models import byte_tokenizer, tiny_model

KEYS = [f.key for f in FAMILIES + VARIANT_FAMILIES + GENERIC]


def _trace(tmp_path, key: str, new_tokens: int = 2, **settings):
    """A tiny greedy trace of the family (random norm weights, so post-norm weights matter)."""
    model = randomize_norms(tiny_model(key))
    session = LiveSession(model, byte_tokenizer(), PROMPT, GenerationSettings(max_new_tokens=new_tokens, **settings),
                          out=str(tmp_path / key), name=f"tiny-{key}")
    while session.step() is not None:
        pass
    session.close()
    return model, load_trace(str(tmp_path / key))


def _close(a) -> None:
    """Σ terms == the recorded logit difference, to 1e-4 relative (of the difference, or of the
    largest term when the difference itself is smaller: float32 parts round at their own size)."""
    size = max(abs(a.actual), max(abs(t.value) for t in a.terms))
    assert abs(a.total - a.actual) <= 1e-4 * size, (a.total, a.actual)


@pytest.mark.parametrize("key", KEYS)
def test_terms_sum_to_the_logit_difference(tmp_path, key):
    model, trace = _trace(tmp_path, key)
    cap = trace.model["lens"].get("softcap")
    for i, step in enumerate(trace.steps):
        logits = np.asarray(step["logits"][-1], dtype=np.float64)  # [vocab] the model's own output
        chosen = int(step.token["id"])
        assert chosen == int(np.argmax(logits))  # greedy
        a = attribute(trace, i)
        runner = int(np.argsort(-logits)[1])
        assert (a.target, a.other) == (chosen, runner)
        assert a.actual == pytest.approx(logits[chosen] - logits[runner], abs=1e-9)
        _close(a)
        if cap:  # the split is of the pre-cap difference: check it without the soft-cap term
            pre = cap * np.arctanh(logits[[chosen, runner]] / cap)
            parts = sum(t.value for t in a.terms if t.kind != "softcap")
            assert abs(parts - (pre[0] - pre[1])) <= 1e-4 * max(abs(t.value) for t in a.terms)
        other = int(np.argsort(logits)[0])  # any candidate: the least likely token
        b = attribute(trace, i, other=other)
        assert b.actual == pytest.approx(logits[chosen] - logits[other], abs=1e-9)
        _close(b)
    if not trace.model.get("generic_fallback"):  # adapters: per-head results on every attention block
        a = attribute(trace, len(trace.steps) - 1)
        heads = [t for t in a.terms if t.kind == "head"]
        assert heads and {t.layer for t in heads} == {i for i in range(trace.model["n_layers"]) if f"blocks.{i}.attn.hook_result" in trace.steps[-1]}


@pytest.mark.parametrize("key", ["llama", "gpt2", "gemma2"])
def test_hook_result_is_z_times_w_o(tmp_path, key):
    """Each head's row equals its z (last position) times its slice of the output projection,
    from the model's weights (Linear [d_model, in] and GPT-2's Conv1D [in, d_model])."""
    model, trace = _trace(tmp_path, key, new_tokens=1)
    from stepscope.tracer.adapters.base import out_projection
    from stepscope.tracer.adapters.registry import adapter_for

    adapter = adapter_for(model)
    n_heads = trace.model["n_heads"]
    for step in trace.steps:
        for i, layer in enumerate(adapter.layers()):
            proj = out_projection(adapter.attention(layer))
            w = proj.weight.detach().double()
            w = w.t() if type(proj).__name__ == "Conv1D" else w  # [d_model, n_heads * d_head]
            z = torch.from_numpy(np.asarray(step[f"blocks.{i}.attn.hook_z"][-1], dtype=np.float64))  # [n_heads, d_head]
            want = torch.stack([w[:, h * z.shape[1] : (h + 1) * z.shape[1]] @ z[h] for h in range(n_heads)])  # [n_heads, d_model]
            got = step[f"blocks.{i}.attn.hook_result"]
            assert got.shape == (n_heads, trace.model["d_model"])
            np.testing.assert_allclose(got, want.numpy(), rtol=1e-4, atol=1e-5)


def test_words_layers_and_heads(tmp_path):
    _, trace = _trace(tmp_path, "llama", new_tokens=1)
    a = attribute(trace, 0)
    comps = a.components()
    assert sum(t.value for t in comps) == pytest.approx(a.total, abs=1e-9)  # layer totals = heads + bias
    for i, row in enumerate(a.layers):
        assert row["attn"] == pytest.approx(sum(t.value for t in a.heads(i)) + next(t.value for t in a.terms if t.kind == "attn_bias" and t.layer == i))
    top = a.top(3)
    assert [abs(t.value) for t in top] == sorted((abs(t.value) for t in top), reverse=True)
    assert a.words(2).count(",") == 1 and top[0].label in a.words(2)


def test_missing_pieces_are_one_line_errors(tmp_path):
    _, trace = _trace(tmp_path, "llama", new_tokens=1)
    with pytest.raises(TraceError, match="no step 5"):
        attribute(trace, 5)
    with pytest.raises(TraceError, match="must differ"):
        attribute(trace, 0, target=3, other=3)
    (tmp_path / "x").mkdir()
    _, no_lens = _trace(tmp_path / "x", "llama", new_tokens=1, logit_lens=False)
    with pytest.raises(TraceError, match="no lens.safetensors"):
        attribute(no_lens, 0)
