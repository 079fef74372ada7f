"""The command line: bad input is one clear line on stderr and a non-zero exit, never a traceback."""

from __future__ import annotations

import subprocess
import sys

import pytest

from stepscope.tracer import load_trace
from tests.support.paths import ROOT
from tests.support.tiny_models import byte_tokenizer, tiny_model


def run_cli(*args, timeout=300):
    return subprocess.run([sys.executable, "-m", "stepscope", *args], cwd=ROOT, capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("tiny-gpt2")
    tiny_model("gpt2", n_positions=32).save_pretrained(d)
    byte_tokenizer().save_pretrained(d)
    return str(d)


def _assert_one_line_error(res, pattern):
    assert res.returncode != 0
    assert "Traceback" not in res.stderr
    lines = [line for line in res.stderr.splitlines() if line.strip()]
    assert lines and lines[-1].startswith("stepscope: "), res.stderr
    assert pattern in lines[-1], lines[-1]


@pytest.mark.parametrize(
    "args, pattern",
    [
        (["trace", "--model", "/no/such/model", "--out", "{tmp}/t"], "no such model directory"),
        (["trace", "--model", "{tmp}/x.gguf", "--out", "{tmp}/t"], "no such GGUF file"),
        (["view", "{tmp}/nothing"], "no such trace directory"),
        (["info", "{tmp}"], "has no config.json"),
        (["trace", "--model", "{model}", "--out", "/proc/stepscope-out"], "cannot create trace directory"),
        (["trace", "--model", "{model}", "--top-p", "1.5", "--out", "{tmp}/t"], "top-p must be in (0, 1]"),
        (["trace", "--model", "{model}", "--device", "tpu", "--out", "{tmp}/t"], "unknown device"),
        (["trace", "--model", "{model}", "--prompt", "x" * 40, "--out", "{tmp}/t"], "longer than the model's context of 32"),
    ],
)
def test_bad_input_is_one_line(args, pattern, tmp_path, model_dir):
    res = run_cli(*[a.format(tmp=tmp_path, model=model_dir) for a in args])
    _assert_one_line_error(res, pattern)


def test_output_dir_that_is_not_a_trace_is_refused(tmp_path, model_dir):
    (tmp_path / "notes.txt").write_text("mine")
    res = run_cli("trace", "--model", model_dir, "--out", str(tmp_path))
    _assert_one_line_error(res, "not a trace directory")
    assert (tmp_path / "notes.txt").read_text() == "mine"


def test_unsupported_architecture(tmp_path):
    """An encoder-decoder is no decoder-only LM: refused in one line naming the architecture."""
    from transformers import AutoConfig, AutoModel

    cfg = AutoConfig.for_model("t5", d_model=32, d_kv=8, d_ff=64, num_layers=1, num_heads=2, vocab_size=259)
    AutoModel.from_config(cfg).save_pretrained(tmp_path / "t5")
    byte_tokenizer().save_pretrained(tmp_path / "t5")
    res = run_cli("trace", "--model", str(tmp_path / "t5"), "--out", str(tmp_path / "t"))
    _assert_one_line_error(res, "cannot load model")
    assert "T5Config" in res.stderr


def test_trace_and_info_on_a_local_model(tmp_path, model_dir):
    out = str(tmp_path / "trace")
    res = run_cli("trace", "--model", model_dir, "--prompt", "abc", "--max-new-tokens", "3", "--out", out,
                  "--sample", "--temperature", "0.7", "--top-k", "20", "--seed", "5")
    assert res.returncode == 0, res.stderr
    assert "estimated" in res.stderr and f"trace: {out}" in res.stdout
    tr = load_trace(out)
    assert len(tr.steps) == 3 and tr.generation["do_sample"] and tr.generation["top_k"] == 20
    assert tr.steps[0].sampling["stages"][2]["kept"] == 20
    info = run_cli("info", out)
    assert info.returncode == 0 and "'abc'" in info.stdout and "parameters" in info.stdout
    info = run_cli("info", model_dir)
    assert info.returncode == 0, info.stderr
    for word in ("layers", "d_model", "KV heads", "embedding", "attention", "mlp", "norms", "total"):
        assert word in info.stdout
