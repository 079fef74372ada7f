"""The recording budget: estimate printed, rows trimmed within it, refusal beyond; the same policy for
`stepscope trace`, `stepscope run`, a live session and `stepscope.record`."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch

import stepscope
from stepscope.cli.main import main, parse_args
from stepscope.cli.run import live_app
from stepscope.tracer import load_trace
from stepscope.tracer.budget import ROWS_KEPT, BudgetError, disk_bytes, parse_size, plan
from stepscope.tracer.session import GenerationSettings, LiveSession
from tests.support.tiny_models import byte_tokenizer, tiny_model

PROMPT = "a prompt long enough to pass the row limit of the budget policy, " * 3  # ~195 byte tokens: maps matter


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("tiny-llama")
    tiny_model("llama").save_pretrained(d)
    byte_tokenizer().save_pretrained(d)
    return str(d)


def _trace(model_dir, out, budget, capsys):
    rc = main(["trace", "--model", model_dir, "--prompt", PROMPT, "--no-chat", "--max-new-tokens", "2",
               "--out", out, "--budget", budget])
    return rc, capsys.readouterr().err


def test_sizes_parse():
    assert parse_size("8G") == 8 * 2**30 and parse_size("500MB") == 500 * 2**20 and parse_size("1024") == 1024
    with pytest.raises(ValueError):
        parse_size("-3G")


def test_plan_trims_only_when_needed():
    step = lambda t, s: 100 * t + t * s  # noqa: E731  (the maps are the t*s part)
    maps = lambda t, s: t * s  # noqa: E731
    assert plan(step, maps, 1000, 4, 10**9, True).row_limit is None
    p = plan(step, maps, 1000, 4, 300_000, True)
    assert p.fits and p.row_limit == ROWS_KEPT and p.total_bytes < p.full_bytes
    assert not plan(step, maps, 1000, 4, 1000, True).fits
    assert not plan(step, maps, 1000, 4, 300_000, False).fits  # q/k not recorded: nothing to recompute from


def test_within_budget_the_prefill_keeps_the_last_rows_and_recomputes_the_rest(model_dir, tmp_path, capsys):
    full_out, cut_out = str(tmp_path / "full"), str(tmp_path / "cut")
    rc, err = _trace(model_dir, full_out, "8G", capsys)
    assert rc == 0 and "estimated trace size" in err
    full = load_trace(full_out).steps[0]
    # a budget between the trimmed and the full size
    rc, err = _trace(model_dir, cut_out, str(int(load_trace(full_out).nbytes * 0.9)), capsys)
    assert rc == 0 and f"keep their last {ROWS_KEPT} query rows" in err, err
    cut = load_trace(cut_out)
    step = cut.steps[0]
    t = step.positions[1]
    assert step.shape("blocks.0.attn.hook_pattern")[1] == ROWS_KEPT and step.omitted["blocks.0.attn.hook_pattern"]["rows"] == [0, t - ROWS_KEPT]
    assert cut.nbytes < load_trace(full_out).nbytes * 0.9
    got = step.attention_rows(1, "pattern", 0, t)
    np.testing.assert_allclose(got, full["blocks.1.attn.hook_pattern"], rtol=1e-5, atol=1e-6)


def test_beyond_the_budget_the_run_is_refused_and_nothing_is_left(model_dir, tmp_path, capsys):
    out = str(tmp_path / "never")
    rc, err = _trace(model_dir, out, "10K", capsys)
    assert rc == 2 and "over the budget" in err and "--budget" in err
    assert not os.path.exists(out)


# -- the same policy for every recording: the Python API and the live session -----------------------
@pytest.fixture(scope="module")
def llama():
    return tiny_model("llama"), byte_tokenizer()


def _prompt_ids(tok):
    return torch.tensor([tok(PROMPT)["input_ids"]])  # [1, T]


def test_record_refuses_a_trace_over_the_budget_before_writing(llama, tmp_path):
    model, tok = llama
    out = tmp_path / "never"
    with pytest.raises(BudgetError, match="over the budget"):
        with stepscope.record(model, tok, out=str(out), budget="10K"):
            model.generate(_prompt_ids(tok), max_new_tokens=2, do_sample=False)
    assert not out.exists()
    assert "generate" not in model.__dict__ and "forward" not in model.__dict__  # nothing left patched


def test_record_trims_the_prefill_maps_within_the_budget(llama, tmp_path):
    model, tok = llama
    with stepscope.record(model, tok, out=str(tmp_path / "full")) as rec:
        model.generate(_prompt_ids(tok), max_new_tokens=2, do_sample=False)
    full = rec.trace
    assert not full.steps[0].omitted
    output, cut = stepscope.record_generate(model, tok, _prompt_ids(tok), out=str(tmp_path / "cut"),
                                            budget=int(full.nbytes * 0.9), max_new_tokens=2, do_sample=False)
    step = cut.steps[0]
    t = step.positions[1]
    assert step.shape("blocks.0.attn.hook_pattern")[1] == ROWS_KEPT
    assert step.omitted["blocks.0.attn.hook_pattern"]["rows"] == [0, t - ROWS_KEPT]
    np.testing.assert_allclose(step.attention_rows(1, "pattern", 0, t), full.steps[0]["blocks.1.attn.hook_pattern"], rtol=1e-5, atol=1e-6)


def test_a_live_session_applies_the_budget(llama, tmp_path):
    model, tok = llama
    settings = GenerationSettings(max_new_tokens=2, chat=False)
    with pytest.raises(BudgetError, match="over the budget"):
        LiveSession(model, tok, PROMPT, settings, out=str(tmp_path / "never"), budget="10K")
    assert not (tmp_path / "never").exists()
    full = LiveSession(model, tok, PROMPT, settings, out=str(tmp_path / "full"))
    assert full.plan.fits and full.plan.row_limit is None
    full.run()
    live = LiveSession(model, tok, PROMPT, settings, out=str(tmp_path / "cut"), budget=int(load_trace(str(tmp_path / "full")).nbytes * 0.9))
    assert live.plan.row_limit == ROWS_KEPT and "keep their last" in live.plan.summary()
    live.run()
    step = load_trace(str(tmp_path / "cut")).steps[0]
    assert step.shape("blocks.0.attn.hook_pattern")[1] == ROWS_KEPT


def test_run_takes_the_budget_option(model_dir, tmp_path):
    """`stepscope run` (and `serve`, which forwards its options to `run`) records under --budget too."""
    app = live_app(parse_args(["run", "--model", model_dir, "--prompt", PROMPT, "--no-chat", "--max-new-tokens", "2",
                               "--out", str(tmp_path / "never"), "--budget", "10K"]))
    with pytest.raises(BudgetError, match="over the budget"):
        app.session_factory()
    assert not (tmp_path / "never").exists()


def test_the_estimate_counts_every_file_of_the_trace(tmp_path):
    """The size said before a run covers what lands on disk, lens.safetensors (W_U) included."""
    model = tiny_model("llama", vocab_size=8192)  # W_U of 8192 x d_model dominates a short trace
    settings = GenerationSettings(max_new_tokens=3, chat=False)
    session = LiveSession(model, byte_tokenizer(), "abc", settings, out=str(tmp_path / "t"))
    estimate = session.plan.total_bytes
    session.run()
    written = disk_bytes(str(tmp_path / "t"))
    assert written * 0.95 <= estimate <= written * 1.3, (estimate, written)
