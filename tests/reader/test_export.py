"""A trace as a TransformerLens-shaped cache: equal to an independent full no-cache forward over the same tokens."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest
import torch

import stepscope
from stepscope.tracer import load_trace
from stepscope.tracer.adapters.registry import adapter_for
from stepscope.tracer.export import candidates, decoder, lens, positions, tl_cache, token_ids
from stepscope.tracer.recorder import Recorder
from stepscope.tracer.session import GenerationSettings, LiveSession
from tests.support.paths import ROOT
from tests.support.tiny_models import byte_tokenizer, tiny_model


@pytest.fixture(scope="module")
def traced(tmp_path_factory):
    """A tiny Llama traced for 4 tokens, and the Recorder's full no-cache forward over the whole sequence."""
    model, tok = tiny_model("llama"), byte_tokenizer()
    out = str(tmp_path_factory.mktemp("export") / "t")
    session = LiveSession(model, tok, "Hi there", GenerationSettings(max_new_tokens=4), out=out)
    session.run()
    trace = load_trace(out)
    ids = torch.tensor([t["id"] for t in trace.tokens[:-1]])  # the last chosen token is never fed
    recorder = Recorder(adapter_for(model))
    with torch.no_grad(), recorder.installed():
        logits = model(ids[None], use_cache=False).logits[0]  # [N, vocab]
    full = {n: t.float().numpy() for n, t in recorder.take().items()}
    return trace, full, ids, logits


def test_whole_trace_equals_a_full_forward(traced):
    trace, full, ids, logits = traced
    cache = tl_cache(trace)
    n = len(ids)
    assert token_ids(trace).tolist() == [ids.tolist()] and positions(trace) == (0, n)
    shared = [name for name in cache if name in full]
    assert len(shared) > 20 and "blocks.1.attn.hook_pattern" in shared and "blocks.0.hook_resid_post" in shared
    for name in shared:
        got = cache[name]
        assert got.shape[0] == 1, name  # TransformerLens's batch axis
        assert got.shape[1:] == full[name].shape, name
        finite = np.isfinite(full[name])
        assert np.array_equal(finite, np.isfinite(got[0])), name  # masked scores stay -inf where the full forward has -inf
        np.testing.assert_allclose(got[0][finite], full[name][finite], rtol=1e-4, atol=1e-5, err_msg=name)
    # TransformerLens layouts: [batch, pos, head, d_head] and [batch, head, query, key]
    assert cache["blocks.0.attn.hook_q"].shape[:3] == (1, n, trace.model["n_heads"])
    assert cache["blocks.0.attn.hook_pattern"].shape == (1, trace.model["n_heads"], n, n)
    np.testing.assert_allclose(cache["logits"][0], logits.numpy(), rtol=1e-4, atol=1e-5)
    assert not any(k.startswith(("sample.", "logit_lens.")) for k in cache)


def test_a_step_range_is_the_matching_rows(traced):
    trace, full, _, _ = traced
    start, end = positions(trace, slice(2, 4))
    assert (start, end) == (trace.steps[2].positions[0], trace.steps[3].positions[1])
    cache = tl_cache(trace, slice(2, 4), names=["blocks.1.hook_resid_post", "blocks.0.attn.hook_pattern"])
    assert set(cache) == {"blocks.1.hook_resid_post", "blocks.0.attn.hook_pattern"}
    np.testing.assert_allclose(cache["blocks.1.hook_resid_post"][0], full["blocks.1.hook_resid_post"][start:end], rtol=1e-4, atol=1e-5)
    pattern = cache["blocks.0.attn.hook_pattern"][0]  # [n_heads, end - start, end]: keys from position 0
    np.testing.assert_allclose(pattern, full["blocks.0.attn.hook_pattern"][:, start:end, :end], rtol=1e-4, atol=1e-6)
    with pytest.raises(ValueError):
        tl_cache(trace, [0, 2])
    with pytest.raises(IndexError):
        tl_cache(trace, slice(7, 9))


def test_torch_on_request_only(traced):
    trace = traced[0]
    tensors = stepscope.tl_cache(trace, -1, names=["blocks.0.hook_resid_post", "blocks.0.attn.hook_pattern"], torch=True)
    assert all(isinstance(t, torch.Tensor) and t.dtype == torch.float32 for t in tensors.values())
    code = (
        "import sys; from stepscope.tracer import load_trace; from stepscope.tracer.export import tl_cache, candidates, lens;"
        f"tr = load_trace({trace.path!r}); c = tl_cache(tr); candidates(tr, tr.steps[0]); lens(tr, tr.steps[0]);"
        "assert 'torch' not in sys.modules, 'torch imported'; print(len(c))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env={**os.environ, "PYTHONPATH": ROOT})
    assert done.returncode == 0, done.stderr


def test_candidates_and_lens_decode(traced):
    trace = traced[0]
    step = trace.steps[0]
    decode = decoder(trace)
    top = candidates(trace, step, n=3)
    assert top[0][0] == step.sampling["top1_id"] and top[0][1] == decode([step.sampling["top1_id"]])
    assert top[0][2] == pytest.approx(float(step["sample.candidate_probs"][0]))
    rows = lens(trace, step)
    assert len(rows) == trace.model["n_layers"]
    # the last layer's lens is the model's own prediction
    assert rows[-1][0][0] == decode([step.sampling["top1_id"]])
