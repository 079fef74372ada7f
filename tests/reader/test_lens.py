"""The logit lens computed later (tracer/lens.py, numpy, from the stored final norm + W_U and the
recorded resid_post rows) equals the one computed during tracing; the session's forward uses the
current cache argument (no deprecation warning)."""

from __future__ import annotations

import os
import warnings

import numpy as np
import pytest
from safetensors import safe_open

from stepscope.tracer import load_trace
from stepscope.tracer.lens import RESID_ROWS, LogitLens
from stepscope.tracer.session import GenerationSettings, LiveSession, cache_kwarg
from stepscope.tracer.trace_format import LENS_FILE
from tests.support.family_refs import randomize_norms
from tests.support.tiny_models import byte_tokenizer, tiny_model

PROMPT = "Hi there"


def _trace(key: str, out, mode: str, record=None):
    model = randomize_norms(tiny_model(key))
    settings = GenerationSettings(max_new_tokens=3, lens_mode=mode)
    session = LiveSession(model, byte_tokenizer(), PROMPT, settings, out=str(out), record=record, name=f"tiny-{key}")
    while session.step() is not None:
        pass
    session.close()
    return load_trace(str(out))


def _lens(tr) -> LogitLens:
    facts = tr.manifest["model"]["lens"]
    return LogitLens.open(tr.path, facts)


@pytest.mark.parametrize("key", ["llama", "gpt2", "gemma2", "gpt_neox"])  # RMSNorm, LayerNorm + bias, (1 + w) + soft-cap, NeoX
def test_lens_later_equals_lens_while_tracing(key, tmp_path):
    tr = _trace(key, tmp_path / key, "eager")
    assert os.path.isfile(os.path.join(tr.path, LENS_FILE))
    lens = _lens(tr)
    for step in tr.steps:
        ids, probs = lens.top_k(lens.rows(step))  # [n_layers, k]
        want_ids = np.asarray(step["logit_lens.ids"])
        want_p = np.asarray(step["logit_lens.probs"])
        np.testing.assert_allclose(probs, want_p, atol=1e-5)
        same = ids == want_ids
        # an id may differ only where two probabilities tie to within the tolerance
        assert np.all(same | np.isclose(probs, want_p, atol=1e-5)), key
        assert np.array_equal(ids[:, 0], want_ids[:, 0])


def test_lens_last_layer_is_the_models_logits(tmp_path):
    tr = _trace("gemma2", tmp_path / "g", "lazy")  # soft-capped final logits
    lens = _lens(tr)
    for step in tr.steps:
        logits = lens.logits(lens.rows(step))[-1]  # [vocab]
        np.testing.assert_allclose(logits, step["logits"][-1], atol=1e-4)


def test_lazy_lens_stores_rows_only_when_resid_post_is_not_recorded(tmp_path):
    full = _trace("llama", tmp_path / "full", "lazy")
    stored = lambda step: set(safe_open(step.path, "numpy").keys())  # noqa: E731 (what the step file holds)
    assert not {"logit_lens.ids", "logit_lens.probs", RESID_ROWS} & stored(full.steps[0])
    only = _trace("llama", tmp_path / "only", "lazy", record=["logits"])
    eager = _trace("llama", tmp_path / "eager", "eager", record=["logits"])
    lens = _lens(only)
    for a, b, e in zip(full.steps, only.steps, eager.steps):
        assert b.shape(RESID_ROWS) == (full.model["n_layers"], full.model["d_model"])
        np.testing.assert_array_equal(lens.rows(a), lens.rows(b))
        ids, probs = lens.top_k(lens.rows(b))
        np.testing.assert_array_equal(ids[:, 0], e["logit_lens.ids"][:, 0])
        np.testing.assert_allclose(probs, e["logit_lens.probs"], atol=1e-5)
        for lazy in (a, b):  # the reader's lazy lens, read as the TUI reads it
            assert "logit_lens.ids" in lazy.names and lazy.shape("logit_lens.ids") == e.shape("logit_lens.ids")
            np.testing.assert_array_equal(lazy["logit_lens.ids"][:, 0], e["logit_lens.ids"][:, 0])
            np.testing.assert_allclose(lazy["logit_lens.probs"], e["logit_lens.probs"], atol=1e-5)


def test_no_lens_no_lens_file(tmp_path):
    model = tiny_model("llama")
    session = LiveSession(model, byte_tokenizer(), PROMPT, GenerationSettings(max_new_tokens=1, logit_lens=False),
                          out=str(tmp_path / "t"))
    session.step()
    session.close()
    tr = load_trace(str(tmp_path / "t"))
    assert "lens" not in tr.manifest["model"] and not os.path.exists(os.path.join(tr.path, LENS_FILE))
    assert not any(n.startswith("logit_lens.") for n in tr.steps[0].names)


def test_forward_uses_the_current_cache_argument(tmp_path):
    """transformers 5.x renamed `past_key_values` to `cache`: no deprecation warning from a traced step."""
    model = tiny_model("llama")
    assert cache_kwarg(model) in ("cache", "past_key_values")
    with warnings.catch_warnings():
        warnings.filterwarnings("error", message=".*past_key_values.*")
        warnings.filterwarnings("error", category=FutureWarning)
        session = LiveSession(model, byte_tokenizer(), PROMPT, GenerationSettings(max_new_tokens=3), out=str(tmp_path / "t"))
        while session.step() is not None:
            pass
        session.close()


@pytest.mark.parametrize("key", ["llama", "gpt2", "qwen3_next"])  # Linear, Conv1D, z gated before W_O
def test_head_results_computed_later_equal_those_computed_while_tracing(key, tmp_path):
    """A lazy trace stores each layer's W_O once and the input of W_O per step (attn.hook_o_input);
    the reader's attn.hook_result equals the one a tracing run computed from the model."""
    lazy, eager = _trace(key, tmp_path / "lazy", "lazy"), _trace(key, tmp_path / "eager", "eager")
    with safe_open(os.path.join(lazy.path, LENS_FILE), "np") as fh:
        w_o = {k.removesuffix("_T") for k in fh.keys() if ".attn.W_O" in k}  # W_O_T: stored in the model's layout
        if key == "llama":  # a Linear's weight [d_model, n_heads * d_head] is W_O_T: written without a copy
            assert all(k.endswith("_T") for k in fh.keys() if ".attn.W_O" in k) and "unembed.W_U_T" in fh.keys()
    with safe_open(os.path.join(eager.path, LENS_FILE), "np") as fh:
        assert not any(".attn.W_O" in k for k in fh.keys())
    layers = [i for i in range(lazy.model["n_layers"]) if f"blocks.{i}.attn.hook_result" in eager.steps[0]]
    assert layers and w_o == {f"blocks.{i}.attn.W_O" for i in layers}
    for a, b in zip(lazy.steps, eager.steps):
        assert a.token["id"] == b.token["id"]
        for i in layers:
            name = f"blocks.{i}.attn.hook_result"
            assert name in a.names and name in a and a.shape(name) == b.shape(name) and a.dtype(name) == b.dtype(name)
            assert name not in a._load_header() and f"blocks.{i}.attn.hook_o_input" in a._load_header()
            np.testing.assert_allclose(a[name], b[name], rtol=1e-5, atol=1e-6)


def test_a_lens_file_that_cannot_be_written_fails_the_session_in_one_line(tmp_path, monkeypatch):
    """A lens.safetensors that cannot be written stops the session before any step, with the reason."""
    from stepscope.tracer.trace_format import TraceWriteError
    from stepscope.tracer.writer import TraceWriter

    def full(self, name, arrays):
        raise TraceWriteError(f"disk full while writing {name}")

    monkeypatch.setattr(TraceWriter, "write_arrays", full)
    with pytest.raises(TraceWriteError, match="disk full while writing lens.safetensors"):
        LiveSession(tiny_model("llama"), byte_tokenizer(), PROMPT, GenerationSettings(max_new_tokens=2), out=str(tmp_path / "t"))
