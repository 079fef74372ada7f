"""A bfloat16 model on the CPU keeps the lazy logit lens and the lazy attn.hook_result: the session's
check of the lens (numpy's final norm and unembedding against the model's on a probe row) allows for
the model's own logits being rounded to bfloat16, and the lens the reader computes from the trace
is the model's logits at the last layer within bfloat16's tolerance."""

from __future__ import annotations

import numpy as np
import torch
from safetensors import safe_open

from stepscope.tracer import load_trace
from stepscope.tracer.lens import LogitLens
from stepscope.tracer.session import GenerationSettings, LiveSession
from tests.support.family_refs import randomize_norms
from tests.support.tiny_models import byte_tokenizer, tiny_model


def test_a_bfloat16_model_gets_the_lazy_lens_and_result(tmp_path):
    model = randomize_norms(tiny_model("llama")).to(torch.bfloat16)
    session = LiveSession(model, byte_tokenizer(), "Hi there", GenerationSettings(max_new_tokens=3, chat=False),
                          out=str(tmp_path / "t"))
    assert session.lens_facts and not session.eager_lens
    while session.step() is not None:
        pass
    session.close()
    trace = load_trace(str(tmp_path / "t"))
    lens = LogitLens.open(trace.path, trace.manifest["model"]["lens"])
    assert lens is not None
    for step in trace.steps:
        stored = set(safe_open(step.path, "numpy").keys())
        assert "blocks.0.attn.hook_result" in step.names and "blocks.0.attn.hook_result" not in stored  # the reader's
        want = np.asarray(step["logits"][-1])  # the model's bfloat16 logits
        got = lens.logits(lens.rows(step))[-1]
        np.testing.assert_allclose(got, want, rtol=0.02, atol=0.02 * float(np.abs(want).max()))
