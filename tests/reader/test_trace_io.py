"""The trace on disk: atomic steps, kills and Ctrl-C, corruption, full disk, lazy torch-free reading."""

from __future__ import annotations

import errno
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from safetensors import safe_open

import stepscope.tracer.writer as writer_mod
from stepscope.tracer import TraceError, TraceWriteError, load_trace
from stepscope.tracer.session import GenerationSettings, LiveSession
from tests.support.paths import ROOT
from tests.support.tiny_models import byte_tokenizer, tiny_model


@pytest.fixture(scope="module")
def saved_model_dir(tmp_path_factory):
    """A tiny Llama saved as a local model directory (what `--model DIR` loads)."""
    d = tmp_path_factory.mktemp("tiny-llama")
    tiny_model("llama").save_pretrained(d)
    byte_tokenizer().save_pretrained(d)
    return str(d)


@pytest.fixture(scope="module")
def small_trace(tmp_path_factory):
    out = tmp_path_factory.mktemp("small")
    s = LiveSession(tiny_model("llama"), byte_tokenizer(), "hello", GenerationSettings(max_new_tokens=3), out=str(out))
    while s.step() is not None:
        pass
    s.close()
    return str(out)


def _wait_for_steps(path, n, proc, timeout=120):
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            with open(os.path.join(path, "steps.jsonl"), "rb") as fh:
                if fh.read().count(b"\n") >= n:
                    return
        except (OSError, ValueError):
            pass
        assert proc.poll() is None, proc.stderr.read()
        time.sleep(0.05)
    raise AssertionError("trace never reached the expected steps")


def _trace_cmd(model_dir, out, n=400):
    return [sys.executable, "-m", "stepscope", "trace", "--model", model_dir, "--prompt", "abc", "--no-chat",
            "--max-new-tokens", str(n), "--out", out]


def test_killed_recording_loads_up_to_last_complete_step(saved_model_dir, tmp_path):
    out = str(tmp_path / "killed")
    proc = subprocess.Popen(_trace_cmd(saved_model_dir, out), cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        _wait_for_steps(out, 3, proc)
    finally:
        proc.kill()
        proc.wait()
    tr = load_trace(out)
    assert 3 <= len(tr.steps) < 400
    assert len(tr.tokens) == tr.prompt_len + len(tr.steps)
    for step in tr.steps:  # every listed step is complete and readable
        for name in step.names:
            assert step[name].shape == step.shape(name)


def test_ctrl_c_keeps_every_step_and_says_interrupted(saved_model_dir, tmp_path):
    out = str(tmp_path / "interrupted")
    proc = subprocess.Popen(_trace_cmd(saved_model_dir, out), cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    _wait_for_steps(out, 2, proc)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130
    assert "Traceback" not in err and "interrupted" in err
    tr = load_trace(out)
    assert tr.manifest["stop_reason"] == "interrupted" and not tr.finished
    assert len(tr.steps) >= 2


def test_full_disk_gives_clear_error_and_keeps_steps(tmp_path, monkeypatch):
    real = writer_mod.write_step_file
    calls = {"n": 0}

    def failing(path, arrays):
        calls["n"] += 1
        if calls["n"] == 3:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(path, arrays)

    monkeypatch.setattr(writer_mod, "write_step_file", failing)
    out = str(tmp_path / "full")
    s = LiveSession(tiny_model("llama"), byte_tokenizer(), "abc", GenerationSettings(max_new_tokens=6), out=out)
    s.step()
    s.step()
    with pytest.raises(TraceWriteError, match="disk full.*keeps its 2 complete steps"):
        s.step()
    tr = load_trace(out)
    assert len(tr.steps) == 2 and tr.steps[1]["logits"].shape[0] == 1
    assert tr.manifest["stop_reason"] == "error" and not tr.finished  # a stop reason, never null
    assert not [f for f in os.listdir(out) if f.startswith(".tmp")]  # no half-written temp file left


def test_corrupted_manifest_and_steps_give_clear_errors(small_trace, tmp_path):
    import shutil

    bad = str(tmp_path / "bad")
    shutil.copytree(small_trace, bad)
    step_file = os.path.join(bad, "step_00001.safetensors")
    size = os.path.getsize(step_file)
    with open(step_file, "r+b") as fh:  # same size, garbage header
        fh.write(b"\xff" * 64)
    tr = load_trace(bad)
    with pytest.raises(TraceError, match="corrupted step file"):
        tr.steps[1].names
    with open(step_file, "r+b") as fh:
        fh.truncate(size // 2)
    with pytest.raises(TraceError, match="step 1 is corrupted"):
        load_trace(bad)
    with open(os.path.join(bad, "manifest.json"), "w") as fh:
        fh.write('{"schema": "stepscope.trace", "steps": [')
    with pytest.raises(TraceError, match="corrupted manifest"):
        load_trace(bad)
    with pytest.raises(TraceError, match="no such trace"):
        load_trace(str(tmp_path / "missing"))


def test_step_files_are_standard_safetensors(small_trace):
    tr = load_trace(small_trace)
    step = tr.steps[1]
    with safe_open(step.path, framework="np") as f:
        lazy = set(step.names) - set(step._load_header())  # what the reader computes: the lens and head results
        results = {n for n in lazy if n.endswith(".attn.hook_result") and n.replace("hook_result", "hook_o_input") in f.keys()}
        inputs = tr.model["norm_inputs"]  # a norm's hook_normalized: its recorded input / hook_scale
        norms = {n for n in lazy if n.endswith(".hook_normalized") and inputs[n.removesuffix(".hook_normalized")]["input"] in step.names}
        assert lazy - results - norms == {"logit_lens.ids", "logit_lens.probs"} and results and norms
        assert sorted(f.keys()) == sorted(set(step.names) - set(step.aliases) - lazy)
        for name in set(step.names) - lazy:
            np.testing.assert_array_equal(f.get_tensor(step.aliases.get(name, name)), step[name])


def test_reading_never_imports_torch(small_trace):
    code = (
        "import sys; from stepscope.tracer import load_trace; tr = load_trace(sys.argv[1]); "
        "s = tr.steps[1]; [s[n].sum() for n in s.names]; "
        "assert 'torch' not in sys.modules, 'torch imported'; print(len(s.names))"
    )
    res = subprocess.run([sys.executable, "-c", code, small_trace], cwd=ROOT, capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    assert int(res.stdout) > 20


def test_tracer_never_imports_textual_or_rich():
    code = (
        "import sys, stepscope.tracer, stepscope.tracer.session, stepscope.tracer.loading, stepscope.tracer.recorder, stepscope.tracer.estimate; "
        "bad = [m for m in sys.modules if m.split('.')[0] in ('textual', 'rich')]; "
        "assert not bad, bad"
    )
    res = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert res.returncode == 0, res.stderr


def test_opening_is_lazy(small_trace):
    tr = load_trace(small_trace)
    assert all(s is None or (s._header is None and s._map is None) for s in tr.steps._steps)
    step = tr.steps[0]
    assert step.shape("logits")[1] == tr.model["vocab_size"] and step._map is None  # header only
    arr = step["blocks.0.attn.hook_pattern"]
    assert not arr.flags.writeable and step._map is not None  # a read-only view of the mapped file


def test_record_filter_keeps_only_matching_names(tmp_path):
    out = str(tmp_path / "filtered")
    s = LiveSession(tiny_model("llama"), byte_tokenizer(), "abc", GenerationSettings(max_new_tokens=2), out=out,
                    record=["blocks.*.attn.hook_pattern", "logits"])
    while s.step() is not None:
        pass
    s.close()
    tr = load_trace(out)
    names = set(tr.steps[1].names)
    assert {n for n in names if not n.startswith(("sample.", "logit_lens."))} == {
        "blocks.0.attn.hook_pattern", "blocks.1.attn.hook_pattern", "logits"}
    assert tr.manifest["record"] == ["blocks.*.attn.hook_pattern", "logits"]
    assert tr.steps[1]["logit_lens.ids"].shape[0] == 2  # the logit lens does not depend on the filter


def test_live_session_save_copies_a_loadable_trace(tmp_path):
    s = LiveSession(tiny_model("gpt2"), byte_tokenizer(), "abc", GenerationSettings(max_new_tokens=5))
    s.step()
    s.step()
    saved = s.save(str(tmp_path / "saved"))
    s.step()
    tr = load_trace(saved)
    assert len(tr.steps) == 2 and len(s.trace.steps) == 3
    np.testing.assert_array_equal(tr.steps[1]["logits"], s.trace.steps[1]["logits"])
    s.close()
