"""Branches of a live session: forced tokens, cropped KV cache, shared steps on disk, switching, saving."""

from __future__ import annotations

import json
import os
import shutil

import numpy as np
import pytest
import torch

from stepscope.tracer import load_trace
from stepscope.tracer.branch import BranchSet
from stepscope.tracer.branch_layout import BranchError, branch_path, list_branches
from stepscope.tracer.session import GenerationSettings, LiveSession
from stepscope.tracer.trace_format import TraceError
from tests.support.paths import README, ROOT
from tests.support.tiny_models import byte_tokenizer, tiny_model
from tests.support.trace_edit import edit_manifest

PROMPT = "The cat sat"
N = 6  # tokens per run


def _session(model, tok, out, n=N):
    return LiveSession(model, tok, PROMPT, GenerationSettings(max_new_tokens=n), out=str(out))


class _Forcing:
    """The session's own sampler, with the first chosen tokens replaced (an independent forced run)."""

    def __init__(self, sampler, forced):
        self.sampler, self.forced, self.i = sampler, list(forced), 0

    def __call__(self, logits):
        chosen, record, arrays = self.sampler(logits)
        if self.i < len(self.forced):
            chosen = self.forced[self.i]
            record = dict(record, chosen_id=chosen)  # the record names the token taken, as a branch's does
        self.i += 1
        return chosen, record, arrays


def _other_token(step) -> int:
    """A likely token that is not the one the step chose (the runner-up candidate)."""
    ids = [int(i) for i in step["sample.candidate_ids"]]
    return next(i for i in ids if i != step.token["id"])


def _assert_same_steps(a, b, steps, tol=1e-5):
    for i in steps:
        sa, sb = a.steps[i], b.steps[i]
        assert sa.token["id"] == sb.token["id"], i
        assert sa.names == sb.names
        for name in sa.names:
            x, y = np.asarray(sa[name]), np.asarray(sb[name])
            assert x.shape == y.shape, (i, name)
            np.testing.assert_allclose(x, y, rtol=tol, atol=tol, err_msg=f"step {i} {name}")


@pytest.fixture(scope="module")
def llama():
    return tiny_model("llama"), byte_tokenizer()


@pytest.mark.parametrize("family, late, cache", [
    ("llama", False, "cropped"),
    ("gpt2", False, "cropped"),
    ("mistral", False, "cropped"),  # sliding window 4 < the prompt: its past kept from the start
    ("mistral", True, "recomputed: `crop` was called"),  # BranchSet made after the window filled
    ("qwen3_next", False, "recomputed: a recurrent state cannot be cropped"),
])
def test_forced_branch_equals_fresh_trace_of_the_forced_prefix(tmp_path, family, late, cache):
    model, tok = tiny_model(family), byte_tokenizer()
    root = _session(model, tok, tmp_path / "root")
    if late:
        for _ in range(4):
            root.step()
    tree = BranchSet(root)
    for _ in range(4 - len(root.trace.steps)):
        root.step()
    t = 2
    y = _other_token(root.trace.steps[t])
    b = tree.branch(step=t, token=y)
    b.run()
    tree.close()
    branch = load_trace(branch_path(str(tmp_path / "root"), "b1"))
    parent_tokens = [s.token["id"] for s in load_trace(str(tmp_path / "root")).steps]

    fresh = _session(model, tok, tmp_path / "fresh")
    fresh.sampler = _Forcing(fresh.sampler, parent_tokens[:t] + [y])
    fresh.run()
    fresh_trace = load_trace(str(tmp_path / "fresh"))
    assert [s.token["id"] for s in branch.steps][: t + 1] == parent_tokens[:t] + [y]
    assert len(branch.steps) == len(fresh_trace.steps) == N
    _assert_same_steps(branch, fresh_trace, range(N))
    assert branch.steps[t].forced and not branch.steps[t - 1].forced and branch.steps[t].sampling["sampled_id"] == parent_tokens[t]
    assert branch.steps[t].sampling["chosen_id"] == y
    assert branch.manifest["branch"]["cache"].startswith(cache)


def test_cropped_cache_matches_a_prefill_without_cache(tmp_path, llama):
    """Independent of caching: the branch's last step equals the last row of one prefill over all its tokens."""
    model, tok = llama
    root = _session(model, tok, tmp_path / "root")
    tree = BranchSet(root)
    for _ in range(5):
        root.step()
    b = tree.branch(step=3, token=_other_token(root.trace.steps[3]))
    b.run()
    tree.close()
    tr = load_trace(branch_path(str(tmp_path / "root"), "b1"))
    ids = [t["id"] for t in tr.tokens[:-1]]  # every input of the last step's forward
    with torch.no_grad():
        out = model(input_ids=torch.tensor([ids]), output_hidden_states=True)
    last = tr.steps[len(tr.steps) - 1]
    np.testing.assert_allclose(last["logits"][-1], out.logits[0, -1].numpy(), rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(last["blocks.0.hook_resid_post"][-1], out.hidden_states[1][0, -1].numpy(), rtol=1e-4, atol=1e-4)


def test_parent_run_is_kept_and_continues(tmp_path, llama):
    model, tok = llama
    ref = _session(model, tok, tmp_path / "ref")
    ref.run()
    root = _session(model, tok, tmp_path / "root")
    tree = BranchSet(root)
    for _ in range(3):
        root.step()
    before = [s._entry["checksum"] for s in root.trace.steps]
    tree.branch(step=1, token=_other_token(root.trace.steps[1])).run()
    assert tree.switch("") is root
    root.run()  # its cache was not cropped
    tree.close()
    rt = load_trace(str(tmp_path / "root"))
    assert [s._entry["checksum"] for s in rt.steps][:3] == before
    _assert_same_steps(rt, load_trace(str(tmp_path / "ref")), range(N), tol=0)


def test_branch_on_disk_shares_the_parents_steps(tmp_path, llama):
    model, tok = llama
    root = _session(model, tok, tmp_path / "root")
    tree = BranchSet(root)
    for _ in range(4):
        root.step()
    tree.branch(step=2, token=65, why="what if b").run()
    tree.branch(step=4, token=66, name="deeper").run()  # a branch of b1 ("b1/deeper")
    assert [r["name"] for r in tree.list()] == ["", "b1", "b1/deeper"]
    tree.close()
    b1 = branch_path(str(tmp_path / "root"), "b1")
    assert sorted(f for f in os.listdir(b1) if f.startswith("step_")) == [f"step_{i:05d}.safetensors" for i in range(2, N)]
    manifest = json.load(open(os.path.join(b1, "manifest.json")))
    assert manifest["branch"]["parent"] == "../.." and manifest["branch"]["step"] == 2
    assert manifest["branch"]["reason"] == {"forced": [{"id": 65, "text": "b"}], "note": "what if b"}
    deep = load_trace(branch_path(str(tmp_path / "root"), "b1/deeper"))
    dirs = [os.path.dirname(s.path) for s in deep.steps]
    root_dir = str(tmp_path / "root")
    assert dirs == [root_dir] * 2 + [b1] * 2 + [os.path.join(b1, "branches", "deeper")] * 2
    assert [t["id"] for t in deep.tokens][-4:-2] == [65, deep.tokens[-3]["id"]] and deep.steps[4].token["id"] == 66
    assert deep.steps[1]["logits"].shape == (1, 259) and "logit_lens.ids" in deep.steps[5]  # lens from the root
    assert [b["name"] for b in list_branches(root_dir)] == ["b1", "b1/deeper"]


def test_self_contained_copy(tmp_path, llama):
    model, tok = llama
    root = _session(model, tok, tmp_path / "root")
    tree = BranchSet(root)
    for _ in range(3):
        root.step()
    b = tree.branch(step=1, token=70)
    b.run()
    saved = b.save(str(tmp_path / "copy"))
    tree.close()
    original = load_trace(branch_path(str(tmp_path / "root"), "b1"))
    shutil.rmtree(tmp_path / "root")
    copy = load_trace(saved)
    assert copy.manifest.get("branch") is None and copy.manifest["branched_from"]["step"] == 1
    assert [s.token["id"] for s in copy.steps] == [s.token["id"] for s in original.steps]
    assert all(os.path.dirname(s.path) == saved for s in copy.steps)
    assert "logit_lens.ids" in copy.steps[2]


def _branch_dir(tmp_path, llama):
    model, tok = llama
    root = _session(model, tok, tmp_path / "root", n=3)
    tree = BranchSet(root)
    root.run()
    tree.branch(step=1, token=70, parent="").run()
    tree.close()
    return str(tmp_path / "root"), branch_path(str(tmp_path / "root"), "b1")


def _edit_manifest(path, **branch):
    edit_manifest(path, lambda m: m["branch"].update(branch))


@pytest.mark.parametrize("edit, message", [
    ({"parent": "/etc"}, "enclosing trace"),
    ({"name": "../x"}, "bad branch name"),
    ({"name": "other"}, "a branch lives in"),
    ({"step": 3}, "checksums"),
    ({"parent_checksums": ["crc32:00000000"]}, "changed since the branch was made"),
])
def test_hostile_branch_manifests_are_one_line_errors(tmp_path, llama, edit, message):
    _, b1 = _branch_dir(tmp_path, llama)
    _edit_manifest(b1, **edit)
    with pytest.raises(TraceError, match=message):
        load_trace(b1)


def test_branch_moved_out_of_its_trace_is_refused(tmp_path, llama):
    _, b1 = _branch_dir(tmp_path, llama)
    shutil.move(b1, tmp_path / "b1")
    with pytest.raises(TraceError, match="a branch lives in"):
        load_trace(str(tmp_path / "b1"))


def test_parent_replaced_by_another_prompt_is_refused(tmp_path, llama):
    root, b1 = _branch_dir(tmp_path, llama)
    model, tok = llama
    os.rename(b1, tmp_path / "keep")
    shutil.rmtree(os.path.join(root, "branches"))
    LiveSession(model, tok, "Another", GenerationSettings(max_new_tokens=3), out=root).run()
    os.makedirs(os.path.join(root, "branches"))
    os.rename(tmp_path / "keep", b1)
    with pytest.raises(TraceError, match="another prompt"):
        load_trace(b1)


def test_branch_errors(tmp_path, llama):
    model, tok = llama
    root = _session(model, tok, tmp_path / "root", n=3)
    tree = BranchSet(root)
    with pytest.raises(BranchError, match="before the first step"):
        tree.branch(step=0, token=1)
    root.step()
    with pytest.raises(BranchError, match="steps 0..0"):
        tree.branch(step=2, token=1)
    with pytest.raises(BranchError, match="out of range"):
        tree.branch(step=0, token=10**6)
    with pytest.raises(BranchError, match="forces a token or applies"):
        tree.branch(step=0)
    with pytest.raises(BranchError, match="bad branch name"):
        tree.branch(step=0, token=1, name="../up")
    tree.branch(step=1, token=1, name="x")
    with pytest.raises(BranchError, match="already exists"):
        tree.branch(step=1, token=1, name="x", parent="")
    with pytest.raises(BranchError, match="no run named"):
        tree.switch("nope")
    tree.close()


def test_view_opens_a_branch(tmp_path, llama, monkeypatch, capsys):
    from stepscope.cli import view
    from stepscope.cli.main import main

    root, b1 = _branch_dir(tmp_path, llama)
    opened = []
    monkeypatch.setattr("stepscope.tui.app.StepscopeApp.run", lambda app: opened.append(app))
    monkeypatch.setattr(view, "check_terminal", lambda: None)  # pytest has no TTY
    assert main(["view", root, "--branch", "b1"]) == 0
    assert main(["view", b1]) == 0
    assert main(["view", root, "--branch", "nope"]) == 2
    assert main(["view", root, "--branch", "../x"]) == 2
    err = capsys.readouterr().err.splitlines()
    assert err == [f"stepscope: {root} has no branch 'nope' (branches: b1)",
                   "stepscope: bad branch name '..': letters, digits, '.', '_' and '-' (64 at most)"]
    assert len(opened) == 2
    assert all(app.trace.path == b1 and app.trace.manifest["branch"]["step"] == 1 for app in opened)


def test_readme_example(tmp_path, llama, monkeypatch):
    import re

    readme = open(README, encoding="utf-8").read()
    code = re.search(r"<!-- readme-test: branches -->\n```python\n(.*?)```", readme, re.S).group(1)
    model, tok = llama
    replace = {
        'LiveSession.open(prompt="The capital of France is", settings=GenerationSettings(max_new_tokens=8), out="traces/paris-live")':
            'LiveSession(MODEL, TOK, "The capital of France is", GenerationSettings(max_new_tokens=8), out="traces/paris-live")',
        "layer=27, head=4": "layer=1, head=3",
    }
    for old, new in replace.items():
        assert old in code
        code = code.replace(old, new)
    monkeypatch.chdir(tmp_path)
    os.makedirs("traces")
    scope = {"MODEL": model, "TOK": tok}
    exec(compile(code, "README.md[branches]", "exec"), scope)
    london = load_trace("traces/paris-live/branches/london")
    assert london.tokens[london.prompt_len]["text"] == " "  # the byte tokenizer's first token of " London"
    assert scope["first"]["intervened"] == ["blocks.1.attn.hook_z"]


def test_reading_a_branch_never_imports_torch(tmp_path, llama):
    import subprocess
    import sys

    root, b1 = _branch_dir(tmp_path, llama)
    code = (
        "import sys\nfrom stepscope.tracer import load_trace\nfrom stepscope.tracer.branch_layout import list_branches, effects\n"
        f"t = load_trace({b1!r}); r = load_trace({root!r})\n"
        "[s[n] for s in t.steps for n in s.names]; effects(t, r); list_branches(r.path)\n"
        "print('torch' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, env={**os.environ, "PYTHONPATH": ROOT})
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False"


def test_info_lists_the_branches(tmp_path, llama, capsys):
    from stepscope.cli.main import main

    model, tok = llama
    root = _session(model, tok, tmp_path / "root", n=3)
    tree = BranchSet(root)
    root.run()
    tree.branch(step=1, token=65, why="try\x1b[31m b", parent="").run()
    from stepscope.tracer.interventions import zero_head

    tree.branch(step=2, interventions=[zero_head(1, 3, from_step=2)], parent="").run()
    tree.close()
    assert main(["info", str(tmp_path / "root")]) == 0
    out = capsys.readouterr().out
    assert "b1: from step 1; forced 'b'; try\\x1b[31m b" in out  # the note arrives inert
    assert "b2: from step 2; zero_head blocks.1.attn.hook_z head 3" in out


@pytest.mark.anyio
@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_the_app_replays_a_branch_across_its_branch_point(tmp_path, llama, anyio_backend):
    """Shared steps (read from the parent directory) and the branch's own, stepped through in the app."""
    from stepscope.tui.app import StepscopeApp
    from stepscope.tui.screens.error import ErrorScreen

    _, b1 = _branch_dir(tmp_path, llama)
    app = StepscopeApp(trace=load_trace(b1))
    async with app.run_test(size=(100, 30)) as pilot:
        for key in ("end", "home", "n", "n"):
            await pilot.press(key)
            await pilot.pause()
            assert not isinstance(app.screen, ErrorScreen), key
        assert app.step == 2 == len(app.trace.steps) - 1
