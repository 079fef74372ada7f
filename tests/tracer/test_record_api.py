"""`stepscope.record`: a user's own `model.generate(...)` traced into a normal trace, checked against plain
generate (same seed) and against an independent recomputation from the recorded raw logits."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from transformers import LogitsProcessor, LogitsProcessorList, StoppingCriteria, StoppingCriteriaList

import stepscope
from stepscope.tracer.adapters.registry import adapter_for
from stepscope.tracer.export import tl_cache
from stepscope.tracer.record import RecordError
from stepscope.tracer.recorder import Recorder
from tests.support.tiny_models import byte_tokenizer, tiny_model

PROMPT = "Hi there"


@pytest.fixture(scope="module")
def model_and_ids():
    model, tok = tiny_model("llama"), byte_tokenizer()
    ids = tok(PROMPT, return_tensors="pt")["input_ids"]  # [1, T]
    return model, tok, ids


def _full_logits(model, trace) -> torch.Tensor:
    ids = torch.tensor([[t["id"] for t in trace.tokens[:-1]]])
    with torch.no_grad():
        return model(ids, use_cache=False).logits[0].float()  # [N, vocab]


def test_greedy_generate_is_traced(model_and_ids, tmp_path):
    model, tok, ids = model_and_ids
    with torch.no_grad():
        plain = model.generate(ids, max_new_tokens=5, do_sample=False)
    with stepscope.record(model, tok, out=str(tmp_path / "t")) as rec:
        traced = model.generate(ids, max_new_tokens=5, do_sample=False)
    assert traced.tolist() == plain.tolist()
    assert "generate" not in model.__dict__ and "forward" not in model.__dict__  # nothing left patched
    trace = rec.trace
    generated = plain[0, ids.shape[1] :].tolist()
    assert [t["id"] for t in trace.tokens[trace.prompt_len :]] == generated
    assert len(trace.steps) == 5 and trace.manifest["stop_reason"] == "max_new_tokens"
    # every recorded tensor equals an independent full no-cache forward over the same tokens
    recorder = Recorder(adapter_for(model))
    full_ids = torch.tensor([[t["id"] for t in trace.tokens[:-1]]])
    with torch.no_grad(), recorder.installed():
        model(full_ids, use_cache=False)
    full = {n: t.float().numpy() for n, t in recorder.take().items()}
    cache = tl_cache(trace)
    shared = [n for n in cache if n in full]
    assert len(shared) > 20
    for name in shared:
        ok = np.isfinite(full[name])
        np.testing.assert_allclose(cache[name][0][ok], full[name][ok], rtol=1e-4, atol=1e-5, err_msg=name)
    for step in trace.steps:
        s = step.sampling
        assert s["greedy"] and s["chosen_id"] == step.token["id"] == s["top1_id"]
        assert s["stages"][0]["name"] == "raw"


def test_sampling_with_a_seed_equals_plain_generate(model_and_ids, tmp_path):
    model, tok, ids = model_and_ids
    kwargs = dict(max_new_tokens=6, do_sample=True, temperature=0.7, top_k=12)
    torch.manual_seed(1234)
    with torch.no_grad():
        plain = model.generate(ids, **kwargs)
    torch.manual_seed(1234)
    with stepscope.record(model, tok, out=str(tmp_path / "t")) as rec:
        traced = model.generate(ids, **kwargs)
    assert traced.tolist() == plain.tolist()
    trace = rec.trace
    full = _full_logits(model, trace)
    for step in trace.steps:
        s = step.sampling
        names = [st["name"] for st in s["stages"]]
        assert "TemperatureLogitsWarper" in names and "TopKLogitsWarper" in names
        assert s["stages"][-1]["kept"] == 12 and not s["greedy"]
        raw = full[step.positions[1] - 1]  # the predicting row, recomputed without the cache
        np.testing.assert_allclose(step["logits"][-1], raw.numpy(), rtol=1e-4, atol=1e-5)
        scaled = raw / 0.7
        kth = torch.topk(scaled, 12).values[-1]
        want = torch.softmax(torch.where(scaled >= kth, scaled, torch.tensor(-float("inf"))), -1)  # [vocab]
        cand = step["sample.candidate_ids"].copy()
        np.testing.assert_allclose(step["sample.candidate_probs"], want[cand].numpy(), rtol=1e-4, atol=1e-6)
        assert s["chosen_prob"] == pytest.approx(float(want[s["chosen_id"]]), rel=1e-4, abs=1e-6)
        assert set(cand[:12].tolist()) == set(torch.topk(raw, 12).indices.tolist())


class BanAndBoost(LogitsProcessor):
    """A user's processor: bans some ids and pushes one up."""

    def __init__(self, banned, boosted):
        self.banned, self.boosted = banned, boosted

    def __call__(self, input_ids, scores):
        scores = scores.clone()
        scores[:, self.banned] = -float("inf")
        scores[:, self.boosted] += 3.0
        return scores


def test_custom_logits_processor_and_stopping_criteria(model_and_ids, tmp_path):
    model, tok, ids = model_and_ids
    with torch.no_grad():
        greedy = model.generate(ids, max_new_tokens=3, do_sample=False)[0, ids.shape[1] :].tolist()
    banned, boosted = greedy[:1] + list(range(10)), 100
    proc = BanAndBoost(banned, boosted)

    class StopAfterTwo(StoppingCriteria):
        def __call__(self, input_ids, scores, **_):
            return torch.full((input_ids.shape[0],), input_ids.shape[1] >= ids.shape[1] + 2, dtype=torch.bool)

    with stepscope.record(model, tok, out=str(tmp_path / "t")) as rec:
        out = model.generate(ids, max_new_tokens=6, do_sample=False, logits_processor=LogitsProcessorList([proc]),
                             stopping_criteria=StoppingCriteriaList([StopAfterTwo()]))
    trace = rec.trace
    assert len(trace.steps) == 2 == out.shape[1] - ids.shape[1]
    assert trace.manifest["stop_reason"] == "stopping_criteria"
    full = _full_logits(model, trace)
    vocab = full.shape[-1]
    for step in trace.steps:
        s = step.sampling
        stage = next(st for st in s["stages"] if st["name"] == "BanAndBoost")
        assert stage["kept"] == vocab - len(banned)
        raw = full[step.positions[1] - 1]
        want = torch.softmax(proc(None, raw[None])[0], -1)  # the processor applied independently
        cand = step["sample.candidate_ids"].copy()
        np.testing.assert_allclose(step["sample.candidate_probs"], want[cand].numpy(), rtol=1e-4, atol=1e-6)
        assert s["chosen_id"] == int(torch.argmax(want)) and s["chosen_id"] not in banned
        assert s["chosen_raw_prob"] == pytest.approx(float(torch.softmax(raw, -1)[s["chosen_id"]]), rel=1e-4)


def test_function_form_and_refusals(model_and_ids, tmp_path):
    model, tok, ids = model_and_ids
    output, trace = stepscope.record_generate(model, tok, ids, out=str(tmp_path / "f"), max_new_tokens=2)
    assert len(trace.steps) == 2 and output.shape[1] == ids.shape[1] + 2
    with pytest.raises(RecordError, match="batch of 1"):
        with stepscope.record(model, tok, out=str(tmp_path / "b")):
            model.generate(ids.repeat(2, 1), max_new_tokens=2)
    with pytest.raises(RecordError, match="beam search"):
        with stepscope.record(model, tok, out=str(tmp_path / "c")):
            model.generate(ids, max_new_tokens=2, num_beams=2)
    with pytest.raises(RecordError, match="KV cache"):
        with stepscope.record(model, tok, out=str(tmp_path / "d")):
            model.generate(ids, max_new_tokens=2, use_cache=False)
    assert "generate" not in model.__dict__ and "forward" not in model.__dict__


def test_stop_at_eos_is_recorded(model_and_ids, tmp_path):
    """A processor forcing EOS at the second new token: generate stops there, and so does the trace."""
    model, tok, ids = model_and_ids
    eos = tok.eos_token_id

    class ForceEos(LogitsProcessor):
        def __call__(self, input_ids, scores):
            if input_ids.shape[1] == ids.shape[1] + 1:
                scores = torch.full_like(scores, -float("inf"))
                scores[:, eos] = 0.0
            return scores

    with stepscope.record(model, tok, out=str(tmp_path / "e")) as rec:
        out = model.generate(ids, max_new_tokens=6, do_sample=False, eos_token_id=eos, logits_processor=LogitsProcessorList([ForceEos()]))
    trace = rec.trace
    assert out[0, -1].item() == eos and len(trace.steps) == 2
    assert trace.manifest["stop_reason"] == "eos" and trace.steps[1].sampling["stages"][-1] == {"name": "ForceEos", "kept": 1}
