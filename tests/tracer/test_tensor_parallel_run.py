"""Tensor-parallel debugger: `torchrun --nproc-per-node 2 ... stepscope run --tensor-parallel` on a tiny Llama
(gloo, two CPU ranks; 4 heads, 2 KV heads: heads 0-1 on rank 0, 2-3 on rank 1). Rank 0's debugger is
driven headless (tests/support/tp_run_rank.py: steps, a new seed, a refused token id, a forced token,
a head ablation, quit); rank 1
follows it. Rank 0's runs are those one process records doing the same (tokens equal, values within
1e-4 relative); rank 1 ran every command and computed the same tokens and logits; every rank exits 0.
A failure on rank 1 ends rank 0's debugger with one line and a non-zero exit."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from stepscope.cli.common import generation_settings, open_session
from stepscope.cli.main import main, parse_args
from stepscope.tracer import load_trace
from stepscope.tracer.branch import BranchSet
from stepscope.tracer.interventions import patch, zero_head, zero_neuron
from stepscope.tracer.tp_follow import sharded
from tests.tracer.test_tensor_parallel import save_tiny

PROMPT = "The capital of France is"
SCRIPT = os.path.join(os.path.dirname(__file__), "..", "support", "tp_run_rank.py")
RUNS = {"": (), "b1": ("branches", "b1"), "b1/b2": ("branches", "b1", "branches", "b2")}  # run -> its directory under the root


def run_args(model: str, out, *extra: str) -> list[str]:
    return ["run", "--model", model, "--prompt", PROMPT, "--no-chat", "--max-new-tokens", "6", "--device", "cpu",
            "--out", str(out), *extra]


def torchrun_debugger(model: str, tmp_path, *script_args: str) -> tuple[subprocess.CompletedProcess, dict, dict]:
    """tests/support/tp_run_rank.py on two ranks: (the run, rank 0's report, rank 1's report)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": "", "PYTHONWARNINGS": "ignore"}
    report = tmp_path / "report"
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2", SCRIPT, str(report),
               *script_args, *run_args(model, tmp_path / "tp", "--tensor-parallel")]
    result = subprocess.run(command, capture_output=True, text=True, env=env, timeout=120)
    reports = []
    for rank in (0, 1):
        path = f"{report}.rank{rank}"
        assert os.path.exists(path), f"rank {rank} wrote no report: {result.stderr[-3000:]}"
        with open(path) as f:
            reports.append(json.load(f))
    return result, reports[0], reports[1]


def single_process_runs(model: str, out) -> None:
    """What rank 0's debugger did, in one process through the tracer API: the prefill and two steps;
    seed 7 from the next step; token 65 forced at step 1 (b1) and one more step; head 1.3 zeroed from step 2 of b1 (b1/b2) and one more."""
    args = parse_args(run_args(model, out))
    session = open_session(args, generation_settings(args))
    branches = BranchSet(session)
    for _ in range(3):
        session.step()
    session.update_settings(seed=7)
    b1 = branches.branch(1, token=65)
    b1.step()
    b1.step()
    b2 = branches.branch(2, interventions=[zero_head(1, 3, from_step=2)])
    b2.step()
    b2.step()
    branches.close()


def assert_same_run(got, want, steps: int) -> None:
    assert [t["id"] for t in got.tokens] == [t["id"] for t in want.tokens]
    assert len(got.steps) == len(want.steps) == steps
    for a, b in zip(got.steps, want.steps):
        assert sorted(a.names) == sorted(b.names)
        assert a.entry.get("forced") == b.entry.get("forced") and a.entry.get("intervened") == b.entry.get("intervened")
        for name in b.names:
            x, y = np.asarray(a[name]), np.asarray(b[name])
            assert x.shape == y.shape, name
            if y.dtype.kind == "f":
                finite = np.abs(y[np.isfinite(y)])  # masked scores are -inf in both
                scale = max(1.0, float(finite.max())) if finite.size else 1.0
                np.testing.assert_allclose(x, y, rtol=1e-4, atol=1e-6 * scale, err_msg=f"step {b.index} {name}")
            else:
                np.testing.assert_array_equal(x, y, err_msg=f"step {b.index} {name}")


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    return save_tiny(tmp_path_factory.mktemp("tiny-llama"))


def test_rank_1_follows_the_debugger_on_rank_0(tiny_dir, tmp_path):
    result, lead, follower = torchrun_debugger(tiny_dir, tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    refused = "BranchError: token id 999 is out of range (vocabulary of 259)"
    assert lead == {"code": 0, "notes": [f"refused: {refused}", "b1", "b1/b2", f"last error: {refused}"], "failure": None}
    assert follower["code"] == 0
    assert not [line for line in (result.stdout + result.stderr).splitlines() if line.startswith("stepscope")]

    single_process_runs(tiny_dir, tmp_path / "one")
    traces = {}
    for run, parts in RUNS.items():
        got, want = load_trace(os.path.join(tmp_path / "tp", *parts)), load_trace(os.path.join(tmp_path / "one", *parts))
        assert_same_run(got, want, steps={"": 3, "b1": 3, "b1/b2": 4}[run])
        traces[run] = got
    root, b1, b2 = traces[""], traces["b1"], traces["b1/b2"]
    assert b1.steps[1].token["id"] == 65 and b1.steps[1].forced
    z = np.asarray(b2.steps[2]["blocks.1.attn.hook_z"])  # [T, n_heads, d_head]: head 3 (rank 1's) zeroed, whole
    assert z.shape[1] == 4 and not z[:, 3].any() and z[:, 2].any()
    assert not np.allclose(b2.steps[2]["blocks.1.hook_attn_out"], b1.steps[2]["blocks.1.hook_attn_out"])

    executed = follower["executed"]
    assert [e["command"] for e in executed] == ["Open"] + ["Step"] * 3 + ["Settings"] + ["Branch"] * 2 + ["Step"] * 2 + ["Branch"] + ["Step"] * 2
    assert executed[4]["fields"] == "Settings(run='', changes={'seed': 7})" and executed[4]["result"] == "(('seed', 7),)"
    assert executed[5]["error"] == refused  # the refusal every rank had: the run went on
    assert "'kind': 'zero_head'" in executed[9]["fields"] and "'head': 3" in executed[9]["fields"]
    steps = [e for e in executed if e["command"] == "Step"]
    assert [(e["run"], e["step"]) for e in steps] == [("", 0), ("", 1), ("", 2), ("b1", 1), ("b1", 2), ("b1/b2", 2), ("b1/b2", 3)]
    for e in steps:  # rank 1's own forward chose rank 0's token from the same logits
        step = traces[e["run"]].steps[e["step"]]
        assert e["token"] == step.token["id"]
        np.testing.assert_array_equal(e["candidate_ids"], step["sample.candidate_ids"])
        np.testing.assert_allclose(e["candidate_logits"], step["sample.candidate_logits"], rtol=1e-5, atol=1e-6)
    assert root.steps[2].token["id"] == steps[2]["token"]


def test_a_failing_rank_ends_the_debugger_with_one_line(tiny_dir, tmp_path):
    """Rank 1 fails when it starts step 2 while rank 0 computes it: rank 0's debugger ends with one
    `stepscope:` line naming rank 1's error, every rank exits non-zero, rank 0's trace keeps steps 0-1."""
    result, lead, follower = torchrun_debugger(tiny_dir, tmp_path, "--fail-at", "2")
    assert result.returncode != 0
    lines = [line for line in (result.stdout + result.stderr).splitlines() if line.startswith("stepscope")]
    assert lines == ["stepscope: tensor parallel: rank 1 failed: RuntimeError: injected failure on rank 1"]
    assert lead["code"] == 1 and lead["failure"] == lines[0].removeprefix("stepscope: ")
    assert follower["code"] in (1, 143)  # its own exit once rank 0 has gone, or torchrun's SIGTERM after rank 0's exit
    assert len(load_trace(str(tmp_path / "tp")).steps) == 2


def test_run_with_tensor_parallel_outside_torchrun_is_refused(tiny_dir, tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("RANK", raising=False)
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    assert main(run_args(tiny_dir, tmp_path / "out", "--tensor-parallel")) == 2
    assert "runs under torchrun" in capsys.readouterr().err


@pytest.mark.parametrize("rank", [0, 1])
def test_a_sharded_intervention_edits_the_ranks_own_slice(rank):
    """Heads 0-1 on rank 0, 2-3 on rank 1; neurons 0-63 / 64-127; a patched z row split the same way."""
    facts = {"n_heads": 4, "d_mlp": 128}
    z = torch.ones(3, 2, 8)  # [T, this rank's heads, d_head]
    sharded(vars(zero_head(1, 3)), rank, 2, facts).edit(z, start=0)
    assert z[:, 0].all() and bool(z[:, 1].any()) == (rank == 0)
    neurons = torch.ones(3, 64)  # [T, this rank's neurons]
    sharded(vars(zero_neuron(0, 10)), rank, 2, facts).edit(neurons, start=0)
    assert int((neurons == 0).sum()) == (3 if rank == 0 else 0)
    row = np.arange(32, dtype=np.float32).reshape(4, 8)  # a whole z row [n_heads, d_head]
    source = patch(0, "attn.hook_z", 1, _Source(row), prompt_len=1)
    sharded(vars(source), rank, 2, facts).edit(z, start=0)
    np.testing.assert_array_equal(z[1].numpy(), row[2 * rank : 2 * rank + 2])
    whole = torch.ones(3, 4, 8)  # one rank (size 1): the intervention as it is
    sharded(vars(zero_head(1, 3)), 0, 1, facts).edit(whole, start=0)
    assert not whole[:, 3].any() and whole[:, :3].all()


class _Source:
    """A trace holding one recorded z row at position 1 (what `patch` reads)."""

    path = "source"
    model = {"name": "tiny"}

    def __init__(self, row):
        self.steps = [_SourceStep(row)]


class _SourceStep:
    index, positions = 0, (0, 2)

    def __init__(self, row):
        self.row = row

    def __contains__(self, name):
        return True

    def __getitem__(self, name):
        return np.stack([np.zeros_like(self.row), self.row])
