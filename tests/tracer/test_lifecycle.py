"""A live session's life: its temporary directory (removed on every exit, stale ones cleaned), the
size of a trace on disk, saving the whole session with its branches, `record` into a new folder,
and diff ranking divergences only where both runs were fed the same token."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest
import torch

import stepscope
from stepscope.tracer import load_trace
from stepscope.tracer.branch import BranchSet
from stepscope.tracer.branch_layout import branch_path, list_branches
from stepscope.tracer.budget import disk_bytes
from stepscope.tracer.diff import compare, summary
from stepscope.tracer.scratch import LIVE_DIR_PREFIX, remove_stale_live_dirs
from stepscope.tracer.session import GenerationSettings, LiveSession
from tests.support.paths import ROOT
from tests.support.tiny_models import byte_tokenizer, tiny_model


def _du_apparent(path: str) -> int:
    """`du --apparent-size -sb`: an independent count of every byte under a directory."""
    return int(subprocess.run(["du", "--apparent-size", "-sb", path], capture_output=True, text=True, check=True).stdout.split()[0])


# -- the temporary directory ----------------------------------------------------------------------
CHILD = textwrap.dedent("""
    import os, signal, sys, time
    sys.path.insert(0, {root!r})
    from stepscope.tracer.session import GenerationSettings, LiveSession
    from tests.support.tiny_models import byte_tokenizer, tiny_model
    s = LiveSession(tiny_model("llama"), byte_tokenizer(), "Hello", GenerationSettings(max_new_tokens=2))
    s.run()
    print(s.path, flush=True)
    sys.stdin.readline()  # the parent has seen the directory
    how = sys.argv[1]
    if how == "raise":
        raise RuntimeError("boom")
    if how in ("kill", "term"):
        time.sleep(60)
""")


def _child(how: str, tmp_path):
    env = dict(os.environ, TMPDIR=str(tmp_path))
    proc = subprocess.Popen([sys.executable, "-c", CHILD.format(root=ROOT), how], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    path = proc.stdout.readline().strip()
    assert path.startswith(str(tmp_path / f"{LIVE_DIR_PREFIX}{proc.pid}-")), (path, proc.stderr.read() if not path else "")
    assert os.path.isfile(os.path.join(path, "manifest.json"))
    proc.stdin.write("go\n")
    proc.stdin.flush()
    return proc, path


@pytest.mark.parametrize("how", ["exit", "raise"])
def test_a_live_directory_goes_when_the_process_ends(how, tmp_path):
    proc, path = _child(how, tmp_path)
    assert proc.wait(timeout=120) == (0 if how == "exit" else 1)
    assert not os.path.exists(path)


def test_a_killed_runs_directory_is_removed_at_the_next_start_only(tmp_path):
    proc, path = _child("kill", tmp_path)
    other = tmp_path / "stepscope-live-notapid"  # not named by a pid: never touched
    other.mkdir()
    assert remove_stale_live_dirs(str(tmp_path)) == []  # its owner still runs
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    assert os.path.isdir(path)  # SIGKILL: nothing could run
    assert remove_stale_live_dirs(str(tmp_path)) == [path]
    assert not os.path.exists(path) and other.is_dir()


def test_a_dir_of_a_live_process_is_kept(tmp_path):
    mine = tmp_path / f"{LIVE_DIR_PREFIX}{os.getpid()}-abc"
    parent = tmp_path / f"{LIVE_DIR_PREFIX}{os.getppid()}-abc"
    mine.mkdir()
    parent.mkdir()
    assert remove_stale_live_dirs(str(tmp_path)) == []
    assert mine.is_dir() and parent.is_dir()


# -- size on disk --------------------------------------------------------------------------------
def test_disk_bytes_counts_every_file_like_du(branched):
    root, _ = branched
    trace = load_trace(root)
    assert os.path.isdir(os.path.join(root, "branches"))
    got, want = disk_bytes(root), _du_apparent(root)
    assert abs(got - want) <= 0.01 * want
    assert got > trace.nbytes  # the step arrays alone leave out the manifest, log, tokenizer, lens, branches


# -- saving the whole session --------------------------------------------------------------------
def test_save_writes_the_original_and_every_branch(tmp_path):
    model, tok = tiny_model("llama"), byte_tokenizer()
    root = LiveSession(model, tok, "Paris is in", GenerationSettings(max_new_tokens=4), out=str(tmp_path / "live"), name="tiny")
    tree = BranchSet(root)
    while root.step() is not None:
        pass
    chosen = root.trace.steps[1].token["id"]
    tree.branch(step=1, token=(chosen + 1) % 256).run()
    tree.switch("")
    tree.branch(step=2, token=(root.trace.steps[2].token["id"] + 1) % 256)
    tree.session.step()  # the second branch is part-way: its steps so far are saved
    dst = tmp_path / "saved"
    root.save(str(dst))
    saved = list_branches(str(dst))
    assert sorted(b["name"] for b in saved) == ["b1", "b2"]
    for key, session in tree.sessions.items():
        copy = load_trace(branch_path(str(dst), key) if key else str(dst))
        assert len(copy.steps) == len(session.writer.manifest["steps"])
        for i in range(len(copy.steps)):
            np.testing.assert_array_equal(copy.steps[i]["logits"], session.trace.steps[i]["logits"])
    tree.close()


# -- record into a new folder --------------------------------------------------------------------
def test_record_creates_missing_parents(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    model, tok = tiny_model("llama"), byte_tokenizer()
    ids = tok("Hi", return_tensors="pt")["input_ids"]
    with stepscope.record(model, tok, out="traces/deeper/mine") as rec, torch.no_grad():
        model.generate(ids, max_new_tokens=2, do_sample=False)
    assert len(load_trace("traces/deeper/mine").steps) == len(rec.trace.steps) == 2


# -- diff: divergence only where the inputs agree ------------------------------------------------
def _fed(trace, step) -> int:
    return int(trace.tokens[step.positions[1] - 1]["id"])


def test_diff_ranks_only_steps_fed_the_same_token(branched):
    root, _ = branched
    a, b = load_trace(root), load_trace(branch_path(root, "b1"))
    d = compare(a, b)
    fed_same = [i for i in range(min(len(a.steps), len(b.steps))) if _fed(a, a.steps[i]) == _fed(b, b.steps[i])]
    assert fed_same == [0, 1]  # forced at step 1: step 2 is the first fed a different token
    assert d.first_input_step == 2
    assert all(step in fed_same for step, *_ in d.diverging_layers(100))
    text = summary(d)
    assert "inputs differ: step 2" in text
    assert not any(line.strip().startswith("step 2 ") for line in text.splitlines())


def test_diff_of_prompts_differing_inside_lists_comparable_steps(tmp_path):
    model, tok = tiny_model("llama"), byte_tokenizer()
    traces = []
    for name, prompt in (("a", "The capital of France is"), ("b", "The capital of Brance is")):
        LiveSession(model, tok, prompt, GenerationSettings(max_new_tokens=5, chat=False), out=str(tmp_path / name)).run()
        traces.append(load_trace(str(tmp_path / name)))
    a, b = traces
    d = compare(a, b)
    assert d.first_token == 15  # "F" vs "B" (one byte per token)
    rows = d.diverging_layers(100)
    assert rows and rows[0][0] == 0  # the prefill: same last token, different context
    for step, layer, rel, _ in rows:
        assert _fed(a, a.steps[step]) == _fed(b, b.steps[step])
        x = a.steps[step][f"blocks.{layer}.hook_resid_post"][-1].astype(np.float64)
        y = b.steps[step][f"blocks.{layer}.hook_resid_post"][-1].astype(np.float64)
        assert rel == pytest.approx(np.linalg.norm(y - x) / np.linalg.norm(x))


def test_directory_removal_is_prompt_after_sigterm_of_a_plain_python_child(tmp_path):
    """SIGTERM's default action skips atexit: the CLI turns it into an exit (tests/cli); a plain
    Python process keeps its directory for the next start to clean."""
    proc, path = _child("term", tmp_path)
    time.sleep(0.5)
    proc.send_signal(signal.SIGTERM)
    proc.wait(timeout=30)
    assert os.path.isdir(path)
    assert remove_stale_live_dirs(str(tmp_path)) == [path]
