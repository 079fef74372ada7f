"""Sampling what-if: the numpy pipeline against transformers' own logits warpers and against the
live (torch) sampler, and its replay on recorded steps against what the live sampler recorded."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from transformers import LogitsProcessorList, MinPLogitsWarper, TemperatureLogitsWarper, TopKLogitsWarper, TopPLogitsWarper

from stepscope.tracer import load_trace
from stepscope.tracer.session import GenerationSettings, LiveSession
from stepscope.tracer.whatif import WhatIfSettings, distribution, replay, side_by_side
from tests.support.tiny_models import byte_tokenizer, tiny_model

SETTINGS = [
    dict(temperature=0.7),
    dict(temperature=1.3, top_k=12),
    dict(temperature=0.9, top_p=0.8),
    dict(temperature=1.0, top_k=50, top_p=0.95, min_p=0.05),
    dict(temperature=2.0, min_p=0.1),
]


def _reference(raw: torch.Tensor, s: dict) -> np.ndarray:
    """transformers' warpers in its order (temperature, top-k, top-p, min-p), then softmax."""
    chain = [TemperatureLogitsWarper(s.get("temperature", 1.0))]
    if s.get("top_k"):
        chain.append(TopKLogitsWarper(s["top_k"]))
    if s.get("top_p", 1.0) < 1.0:
        chain.append(TopPLogitsWarper(s["top_p"]))
    if s.get("min_p"):
        chain.append(MinPLogitsWarper(s["min_p"]))
    out = LogitsProcessorList(chain)(torch.zeros(1, 1, dtype=torch.long), raw[None].clone())
    return torch.softmax(out[0].double(), -1).numpy()


@pytest.mark.parametrize("s", SETTINGS)
def test_pipeline_equals_transformers_warpers(s):
    for seed in range(3):
        raw = torch.randn(300, generator=torch.Generator().manual_seed(seed)) * 3  # [vocab]
        d = distribution(raw.numpy(), WhatIfSettings(do_sample=True, **s))
        want = _reference(raw, s)
        assert set(np.flatnonzero(d.probs > 0)) == set(np.flatnonzero(want > 0))
        np.testing.assert_allclose(d.probs, want, atol=1e-6)


@pytest.mark.parametrize("s", SETTINGS + [dict(temperature=0.01), dict(top_k=1)])
@pytest.mark.parametrize("do_sample", [True, False])
def test_pipeline_equals_the_live_sampler(s, do_sample):
    from stepscope.tracer.sampler import Sampler, SamplerSettings

    for seed in range(3):
        raw = torch.randn(1000, generator=torch.Generator().manual_seed(seed)) * 4  # [vocab]
        chosen, record, arrays = Sampler(SamplerSettings(do_sample=do_sample, **s))(raw)
        d = distribution(raw.numpy(), WhatIfSettings(do_sample=do_sample, **s))
        assert d.stages == record["stages"] and d.n_nucleus == record["nucleus_size"]
        ids = arrays["sample.candidate_ids"]
        np.testing.assert_allclose(d.probs[ids], arrays["sample.candidate_probs"], atol=1e-6)
        np.testing.assert_allclose(d.temp_probs[ids], arrays["sample.candidate_temp_probs"], atol=1e-6)
        assert d.probs[chosen] > 0 and abs(float(d.probs.sum()) - 1) < 1e-5


@pytest.fixture(scope="module")
def sampled(tmp_path_factory):
    out = tmp_path_factory.mktemp("whatif") / "t"
    settings = GenerationSettings(do_sample=True, temperature=1.2, top_k=40, top_p=0.9, seed=5, max_new_tokens=4)
    session = LiveSession(tiny_model("llama"), byte_tokenizer(), "Paris is in", settings, out=str(out), name="tiny")
    while session.step() is not None:
        pass
    session.close()
    return load_trace(str(out))


def test_replay_with_the_recorded_settings_reproduces_the_record(sampled):
    g = sampled.generation
    s = WhatIfSettings(True, g["temperature"], g["top_k"], g["top_p"], g.get("min_p", 0.0), g["seed"])
    for step in sampled.steps:
        w = replay(step, s)
        assert w.exact
        rec = step.sampling
        assert w.stages == rec["stages"]
        assert int(step.token["id"]) in set(w.ids.tolist())  # the live draw lies in the replayed candidate set
        probs = dict(zip(w.ids.tolist(), w.probs.tolist()))
        for i, p in zip(step["sample.candidate_ids"].tolist(), step["sample.candidate_probs"].tolist()):
            assert probs.get(i, 0.0) == pytest.approx(p, abs=1e-6)
        rows = side_by_side(step, w)
        assert all(a == pytest.approx(b, abs=1e-6) for _, a, b in rows)


def test_other_settings_change_the_candidates_and_the_choice(sampled):
    step = sampled.steps[1]
    logits = step["logits"][-1].astype(np.float64)
    greedy = replay(step, WhatIfSettings())
    assert greedy.chosen == int(np.argmax(logits)) and greedy.ids[0] == greedy.chosen
    one = replay(step, WhatIfSettings(do_sample=True, top_k=1, seed=3))
    assert one.ids.tolist() == [int(np.argmax(logits))] and one.probs.tolist() == [1.0] and one.chosen == one.ids[0]
    hot = replay(step, WhatIfSettings(do_sample=True, temperature=3.0))
    assert len(hot.ids) == logits.shape[0] and hot.entropy > replay(step, WhatIfSettings(do_sample=True, temperature=0.5)).entropy
    draws = {replay(step, WhatIfSettings(do_sample=True, temperature=3.0, seed=k)).chosen for k in range(12)}
    assert len(draws) > 1  # the seed drives the draw
    assert replay(step, WhatIfSettings(do_sample=True, temperature=3.0, seed=7)).chosen == replay(step, WhatIfSettings(do_sample=True, temperature=3.0, seed=7)).chosen
    with pytest.raises(ValueError, match="top-p"):
        replay(step, WhatIfSettings(do_sample=True, top_p=0.0))


def test_without_full_logits_the_stored_candidates_are_used(tmp_path):
    settings = GenerationSettings(max_new_tokens=2)
    session = LiveSession(tiny_model("llama"), byte_tokenizer(), "Hi", settings, out=str(tmp_path / "t"), name="tiny", record=["blocks.0.*"])
    while session.step() is not None:
        pass
    session.close()
    step = load_trace(str(tmp_path / "t")).steps[1]
    assert "logits" not in step
    w = replay(step, WhatIfSettings(do_sample=True, temperature=0.5))
    assert not w.exact
    raw = step["sample.candidate_logits"].astype(np.float64) / 0.5
    want = np.exp(raw - raw.max())
    want /= want.sum()  # softmax over the stored candidates only
    got = dict(zip(w.ids.tolist(), w.probs.tolist()))
    np.testing.assert_allclose([got[i] for i in step["sample.candidate_ids"].tolist()], want, atol=1e-6)
