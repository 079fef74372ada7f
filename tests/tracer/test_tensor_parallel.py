"""Tensor parallelism: `torchrun --nproc-per-node 2 -m stepscope trace --tensor-parallel` on a tiny Llama
(gloo, two CPU ranks) records the same trace as one process: the same tokens, the same names and
shapes (whole tensors, not shards), every value within 1e-4 relative. A model that cannot be
sharded over the ranks is refused with one line."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest

from stepscope.cli.main import main
from stepscope.tracer import load_trace
from stepscope.tracer.distributed import TensorParallelError, check_shardable
from tests.support.tiny_models import byte_tokenizer, tiny_model

PROMPT = "The capital of France is"
STEPS = 4


def save_tiny(path, **overrides) -> str:
    model = tiny_model("llama", **overrides)
    model.save_pretrained(path)
    byte_tokenizer().save_pretrained(path)
    return str(path)


def torchrun(*args: str, ranks: int = 2, timeout: int = 120, tmpdir: str | None = None) -> subprocess.CompletedProcess:
    """`torchrun --standalone --nproc-per-node RANKS -m stepscope ARGS` on the CPU (gloo); `tmpdir`: the ranks' TMPDIR."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": "", "PYTHONWARNINGS": "ignore",
           **({"TMPDIR": tmpdir} if tmpdir else {})}
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={ranks}",
               "-m", "stepscope", *args]
    return subprocess.run(command, capture_output=True, text=True, env=env, timeout=timeout)


def trace_args(model: str, out, *extra: str) -> list[str]:
    return ["trace", "--model", model, "--prompt", PROMPT, "--no-chat", "--max-new-tokens", str(STEPS),
            "--device", "cpu", "--out", str(out), *extra]


def assert_same_trace(got, want) -> None:
    """Tokens equal; per step the same names, shapes and values (float: rtol 1e-4)."""
    assert [t["id"] for t in got.tokens] == [t["id"] for t in want.tokens]
    assert len(got.steps) == len(want.steps) == STEPS
    for a, b in zip(got.steps, want.steps):
        assert sorted(a.names) == sorted(b.names)
        for name in b.names:
            x, y = np.asarray(a[name]), np.asarray(b[name])
            assert x.shape == y.shape, name
            if y.dtype.kind == "f":
                finite = np.abs(y[np.isfinite(y)])  # masked scores are -inf in both
                scale = max(1.0, float(finite.max())) if finite.size else 1.0
                np.testing.assert_allclose(x, y, rtol=1e-4, atol=1e-6 * scale, err_msg=name)
            else:
                np.testing.assert_array_equal(x, y, err_msg=name)


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    return save_tiny(tmp_path_factory.mktemp("tiny-llama"))


@pytest.mark.parametrize("extra", [(), ("--no-logit-lens",)], ids=["lens", "no-lens"])
def test_two_ranks_record_the_single_process_trace(tiny_dir, tmp_path, extra):
    """With the lens the reader computes attn.hook_result from W_O (lazy); without it each step stores it."""
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    result = torchrun(*trace_args(tiny_dir, tmp_path / "tp", "--tensor-parallel", *extra), tmpdir=str(scratch))
    assert result.returncode == 0, result.stderr[-3000:]
    assert main(trace_args(tiny_dir, tmp_path / "one", *extra)) == 0
    got, want = load_trace(str(tmp_path / "tp")), load_trace(str(tmp_path / "one"))
    assert_same_trace(got, want)
    names = set(want.steps[0].names)
    assert {"blocks.0.attn.hook_pattern", "blocks.1.attn.hook_z", "blocks.0.mlp.hook_post", "blocks.1.attn.hook_q",
            "blocks.0.attn.hook_result"} <= names
    assert want.steps[0].shape("blocks.0.attn.hook_pattern")[0] == 4  # every head, not one rank's two
    assert result.stdout.count("trace: ") == 1  # rank 0 alone prints the summary
    assert not any(name.startswith("stepscope-") for name in os.listdir(scratch))  # rank 1 made one (a live directory), removed at exit


def test_heads_that_do_not_divide_are_refused(tmp_path):
    """3 KV heads over 2 ranks: the same one line from the ranks, a non-zero exit, nothing written."""
    model = save_tiny(tmp_path / "odd", num_attention_heads=6, num_key_value_heads=3, hidden_size=96)
    result = torchrun(*trace_args(model, tmp_path / "out", "--tensor-parallel"))
    assert result.returncode != 0
    lines = [line for line in result.stderr.splitlines() if line.startswith("stepscope:")]
    # every rank refuses alike; torchrun stops a rank that has not printed yet once the first has exited
    assert 1 <= len(lines) <= 2
    assert set(lines) == {"stepscope: the model's 3 KV heads do not divide by the 2 ranks: use a rank count that divides 3"}
    assert not (tmp_path / "out").exists()


def test_tensor_parallel_outside_torchrun_is_refused(tiny_dir, tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("RANK", raising=False)
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    assert main(trace_args(tiny_dir, tmp_path / "out", "--tensor-parallel")) == 2
    assert "runs under torchrun" in capsys.readouterr().err


def test_a_failing_rank_ends_every_rank_and_keeps_the_complete_steps(tiny_dir, tmp_path):
    """The last rank fails in its third step: it ends with one `stepscope:` line naming the failure
    (rank 0 with at most one of its own), the run exits non-zero, and rank 0's trace reads to its
    last complete step."""
    script = os.path.join(os.path.dirname(__file__), "..", "support", "tp_failing_rank.py")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": "", "PYTHONWARNINGS": "ignore"}
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2", script,
               *trace_args(tiny_dir, tmp_path / "out", "--tensor-parallel")]
    result = subprocess.run(command, capture_output=True, text=True, env=env, timeout=120)
    assert result.returncode != 0
    lines = [line for line in result.stderr.splitlines() if line.startswith("stepscope:")]
    # the failing rank's line always; rank 0's own line when it prints before torchrun stops it
    assert 1 <= len(lines) <= 2 and any("injected failure on the last rank" in line for line in lines)
    trace = load_trace(str(tmp_path / "out"))
    assert len(trace.steps) == 2
    assert trace.steps[1]["blocks.1.attn.hook_z"].shape[1] == 4


def test_families_that_cannot_be_sharded_are_refused():
    """Mixtures of experts: tests/tracer/test_expert_parallel.py."""
    with pytest.raises(TensorParallelError) as caught:
        check_shardable(tiny_model("gpt2").config, 2)
    assert str(caught.value) == "gpt2 models cannot be sharded: transformers has no tensor-parallel plan for them"
