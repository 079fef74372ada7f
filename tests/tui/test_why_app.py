"""The Why (attribution), What if and Compare panes inside the app: keys AND clicks, heavy work off
the UI thread, and `stepscope diff` on a terminal opening the Compare pane."""

from __future__ import annotations

import shutil
import threading
import time

import numpy as np
import pytest

from stepscope.tracer import load_trace
from stepscope.tracer.attribution import attribute
from stepscope.tracer.branch_layout import branch_path, list_branches
from stepscope.tracer.session import GenerationSettings, LiveSession
from stepscope.tui.app import StepscopeApp
from stepscope.tui.widgets.attribution import AttributionPane
from stepscope.tui.widgets.diff import DiffPane
from stepscope.tui.widgets.whatif import WhatIfPane
from tests.support.app_harness import make_factory, run, screen, wait_idle
from tests.support.tiny_models import byte_tokenizer, tiny_model


def _trace(path, prompt):
    s = LiveSession(tiny_model("llama"), byte_tokenizer(), prompt, GenerationSettings(max_new_tokens=3), out=str(path),
                    name="tiny")
    while s.step() is not None:
        pass
    s.close()
    return str(path)


@pytest.fixture(scope="module")
def paths(tmp_path_factory):
    root = tmp_path_factory.mktemp("why-app")
    return _trace(root / "a", "Paris is in France"), _trace(root / "b", "Paris is in Greece")


async def until(pilot, condition, timeout=10.0):
    """Let the app run until `condition()` holds (a worker's result arrived)."""
    end = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < end, "timed out"
        await pilot.pause(0.05)


async def click_text(pilot, pane, text: str, nth: int = 0):
    """Click the nth line of a lines pane containing `text`, on that text."""
    pane._rebuild()
    hits = [(i, line.plain.index(text)) for i, line in enumerate(pane._lines) if text in line.plain]
    row, col = hits[nth]
    pane.scroll_to(y=row, animate=False, immediate=True)
    await pilot.pause()
    dx = pane.content_region.x - pane.region.x
    dy = pane.content_region.y - pane.region.y
    assert await pilot.click(pane, offset=(dx + col, dy + row - pane.scroll_offset.y))
    await pilot.pause()


def test_why_pane_reads_the_unembedding_in_a_worker_and_the_keys_stay_live(paths, monkeypatch):
    import stepscope.tui.widgets.attribution as module

    release = threading.Event()
    real = module.read_lens
    monkeypatch.setattr(module, "read_lens", lambda source: (release.wait(10), real(source))[1])
    trace = load_trace(paths[0])
    app = StepscopeApp(trace=trace)

    async def script(app, pilot):
        await pilot.press("8")
        await pilot.pause()
        assert "reading the unembedding" in screen(app)
        await pilot.press("j", "right")  # the UI thread is free while W_U is being read
        await pilot.pause()
        assert (app.layer, app.step) == (1, 1) and "reading the unembedding" in screen(app)
        release.set()
        await until(pilot, lambda: "logit difference" in screen(app))
        expected = attribute(trace, 1)
        assert f"{expected.actual:+.3f}" in screen(app) and "top (logits): " + expected.words(6)[:20] in screen(app)

    run(app, script)


def test_why_pane_keys_and_clicks(paths):
    trace = load_trace(paths[0])
    app = StepscopeApp(trace=trace)

    async def script(app, pilot):
        await pilot.press("8")
        pane = app.main_screen.pane("why")
        assert isinstance(pane, AttributionPane)
        await until(pilot, lambda: "logit difference" in screen(app))
        # a click on a layer row selects that layer (and its heads are listed)
        await click_text(pilot, pane, "   1 ")
        assert app.layer == 1 and "heads of layer 1" in screen(app)
        # pick a rival by clicking it: the difference is now against that token
        rivals = module_rivals(trace, 0)
        await click_text(pilot, pane, "vs ")
        line = next(line for line in pane._lines if line.plain.startswith("vs "))
        offset = line.plain.index("  ") + 2  # the second rival
        await pilot.click(pane, offset=(pane.content_region.x - pane.region.x + offset,
                                        pane.content_region.y - pane.region.y + pane._lines.index(line) - pane.scroll_offset.y))
        await pilot.pause()
        assert pane.other() == rivals[1]
        assert f"{attribute(trace, 0, other=rivals[1]).actual:+.3f}" in screen(app)
        # keys: o another rival, h the top head, Enter its pattern in the Attention pane
        pane.focus()
        await pilot.press("o")
        assert pane.other() == rivals[2]
        await pilot.press("h")
        await pilot.pause()
        heads = attribute(trace, 0, other=rivals[2]).heads(1)
        top = max(heads, key=lambda t: abs(t.value)).head
        assert app.head == top
        await pilot.press("enter")
        await pilot.pause()
        assert app.main_screen.active_pane_id == "heatmap" and (app.layer, app.head) == (1, top)
        # a click on a head row opens that head's pattern
        await pilot.press("8")
        await pilot.pause()
        other = next(t for t in heads if t.head != top)
        await click_text(pilot, pane, f" head 1.{other.head} ")
        assert app.main_screen.active_pane_id == "heatmap" and app.head == other.head

    run(app, script)


def module_rivals(trace, step):
    from stepscope.tui.views.attribution import rivals

    return rivals(trace, step)


def test_whatif_pane_keys_and_clicks(paths):
    trace = load_trace(paths[0])
    app = StepscopeApp(trace=trace)

    async def script(app, pilot):
        await pilot.press("9", "right")
        await pilot.pause()
        pane = app.main_screen.pane("whatif")
        assert isinstance(pane, WhatIfPane) and "what if: greedy" in screen(app)
        await click_text(pilot, pane, "T[+]")
        await click_text(pilot, pane, "T[+]")
        assert pane.settings.do_sample and pane.settings.temperature == pytest.approx(1.2)
        pane.focus()
        await pilot.press("k")  # top-k 0 -> 0 (off stays off), then K: top-k 1
        await pilot.press("K")
        await pilot.pause()
        assert pane.settings.top_k == 1
        # top-k 1 leaves one token: the recorded logits' argmax, whatever the temperature and seed
        argmax = int(np.argmax(np.asarray(trace.steps[1]["logits"][-1])))
        chosen = next(line for line in pane.plain_lines if line.startswith("would choose"))
        assert "p 1.000" in chosen
        from stepscope.tui.render.lines import token

        assert chosen.startswith("would choose " + token(trace, argmax).plain)
        await click_text(pilot, pane, "r[recorded]")
        assert "what if: greedy" in screen(app)

    run(app, script)


def test_compare_pane_from_diff_app(paths, tmp_path):
    from stepscope.cli.diff import diff_app
    from stepscope.tracer.diff import compare

    a, b = load_trace(paths[0]), load_trace(paths[1])
    app = diff_app(a, b)

    async def script(app, pilot):
        await pilot.pause()
        pane = app.main_screen.pane("compare")
        assert isinstance(pane, DiffPane) and app.main_screen.active_pane_id == "compare"
        await until(pilot, lambda: "aligned position by position" in screen(app))
        d = compare(load_trace(paths[0]), load_trace(paths[1]))
        assert f"first differing token at position {d.first_token}" in screen(app)
        # click on a step's token in the B row: that step
        await click_text(pilot, pane, "B ")
        line = next(line for line in pane._lines if line.plain.startswith("B "))
        col = 2 + len(pane._lines[[x.plain for x in pane._lines].index(line.plain)].plain[2:].split(" ")[0]) + 1
        await pilot.click(pane, offset=(pane.content_region.x - pane.region.x + col,
                                        pane.content_region.y - pane.region.y + pane._lines.index(line) - pane.scroll_offset.y))
        await pilot.pause()
        assert app.step == 1
        # drill down: `.` walks the step's tensors; the values shown are b − a of that tensor
        pane.focus()
        await pilot.press("full_stop")
        await pilot.pause()
        assert pane.tensor is not None and pane.tensor in screen(app)
        x, y = np.asarray(a.steps[1][pane.tensor]), np.asarray(b.steps[1][pane.tensor])
        if x.shape == y.shape:
            assert f"max |b−a| {float(np.abs(y.astype(np.float64) - x).max()):.4g}" in screen(app)
        await pilot.press("r")
        await pilot.pause()
        assert pane.tensor is None and f"blocks.{app.layer}.hook_resid_post" in screen(app)
        # a click on a layer row of the divergence table
        await click_text(pilot, pane, "   1      ")
        assert app.layer == 1

    run(app, script)


def test_compare_with_a_copy_is_identical_and_D_opens_a_directory(paths, tmp_path):
    copy = tmp_path / "copy"
    shutil.copytree(paths[0], copy)
    app = StepscopeApp(trace=load_trace(paths[0]))

    async def script(app, pilot):
        await pilot.press("D")
        await pilot.pause()
        app.screen.query_one("Input").value = str(copy)  # (typing a long tmp path key by key takes seconds)
        await pilot.press("enter")
        await pilot.pause()
        assert app.main_screen.active_pane_id == "compare"
        await until(pilot, lambda: "identical:" in screen(app))

    run(app, script)


def test_diff_on_a_terminal_opens_the_app_and_without_one_prints(paths, monkeypatch, capsys):
    import sys

    from stepscope.cli import diff
    from stepscope.cli.main import main

    opened = []
    monkeypatch.setattr(diff, "run_app", lambda app: opened.append(app) or 0)
    monkeypatch.setattr(sys.stdin, "isatty", lambda: True, raising=False)
    monkeypatch.setattr(sys.stdout, "isatty", lambda: True, raising=False)
    assert main(["diff", paths[0], paths[1]]) == 0
    assert len(opened) == 1 and opened[0].main_screen._initial_pane == "compare"
    assert main(["diff", "--text", paths[0], paths[1]]) == 1  # the summary anyway, exit 1: they differ
    assert "first" in capsys.readouterr().out


def _softmax_p(step, token_id):
    row = np.asarray(step["logits"][-1], dtype=np.float64)
    e = np.exp(row - row.max())
    return float(e[token_id] / e.sum())


def test_B_switches_to_a_branch_marks_where_it_leaves_and_shows_the_effect(branched):
    root, forced = branched
    original = load_trace(root)
    app = StepscopeApp(trace=original)

    async def script(app, pilot):
        await pilot.press("B")
        await pilot.pause()
        assert app.trace is not original and app.trace.manifest["branch"]["step"] == 1
        assert app.trace.steps[1].token["id"] == forced
        assert "⑂" in screen(app)  # the token strip marks the branch point
        await pilot.press("0", "right")
        await until(pilot, lambda: "effect" in screen(app))
        line = next(x for x in screen(app).splitlines() if "effect" in x)
        parent_token = original.steps[1].token["id"]
        assert "forced" in screen(app)
        assert f"p {_softmax_p(original.steps[1], parent_token):.3f} → here {_softmax_p(app.trace.steps[1], parent_token):.3f}" in line
        await pilot.press("B")  # back to the original run
        await pilot.pause()
        assert app.trace.path == original.path and "⑂" not in screen(app)

    run(app, script)


def test_live_F_forces_another_token_in_a_branch_and_B_switches_runs(tiny, tmp_path):
    app = StepscopeApp(session_factory=make_factory(tiny, max_new_tokens=4))

    async def script(app, pilot):
        await wait_idle(app, pilot)
        await pilot.press("n")
        await wait_idle(app, pilot)
        original, root = app.trace, app.session
        assert app.step == 1 and app.n_steps == 2
        chosen = original.steps[1].token["id"]
        logits = np.asarray(original.steps[1]["logits"][-1], dtype=np.float64)
        forced = int(next(i for i in np.argsort(-logits) if int(i) != chosen))
        await pilot.press("1")  # pick the alternative with a click in the Candidates pane
        await pilot.pause()
        pane = app.main_screen.pane("candidates")
        rows = screen(app).splitlines()
        y = next(i for i, row in enumerate(rows) if f" {forced:>6} " in row and pane.region.x < row.index(f" {forced:>6} "))
        assert await pilot.click(None, offset=(rows[y].index(f" {forced:>6} ") + 2, y))
        await pilot.pause()
        assert app.main_screen.pane("why").other() == forced
        await pilot.press("F")
        await pilot.pause()
        assert app.screen.query_one("Input").value.startswith(f"#{forced} ")
        await pilot.press("enter")
        await wait_idle(app, pilot)
        branch = app.trace
        assert branch is not original and app.session is not root and app.step == 1
        assert branch.steps[1].token["id"] == forced and branch.steps[1].forced
        # the forced step was computed on the same prefix as the original's: the same logits
        np.testing.assert_allclose(np.asarray(branch.steps[1]["logits"][-1], dtype=np.float64), logits, rtol=1e-5, atol=1e-5)
        assert "⑂" in screen(app)
        await pilot.press("n")  # the branch continues after the forced token
        await wait_idle(app, pilot)
        assert app.n_steps == 3 and branch.tokens[branch.prompt_len + 1]["id"] == forced
        await pilot.press("B")  # back to the original run, kept as it was
        await pilot.pause()
        assert app.trace is original and app.session is root and app.n_steps == 2 and "⑂" not in screen(app)
        await pilot.press("B")
        await pilot.pause()
        assert app.trace is branch and app.n_steps == 3
        await pilot.press("w")  # w writes the whole session: the original and its branch
        await pilot.pause()
        app.screen.query_one("Input").value = str(out)
        await pilot.press("enter")
        await until(pilot, lambda: (out / "manifest.json").exists() and not app.busy)
        await pilot.pause(0.2)

    out = tmp_path / "written"
    run(app, script)
    written = load_trace(str(out))
    assert written.manifest.get("branch") is None  # the original run at the top
    names = [b["name"] for b in list_branches(str(out))]
    assert len(names) == 1, names  # and its branch beside it
    branch = load_trace(branch_path(str(out), names[0]))
    assert branch.manifest["branch"]["step"] == 1 and branch.tokens[branch.prompt_len + 1]["id"] != written.tokens[written.prompt_len + 1]["id"]
    np.testing.assert_array_equal(np.asarray(branch.steps[0]["logits"]), np.asarray(written.steps[0]["logits"]))  # the shared prefill


def test_live_I_ablates_the_head_at_the_cursor_and_shows_the_effect(tiny):
    app = StepscopeApp(session_factory=make_factory(tiny, max_new_tokens=4))

    async def script(app, pilot):
        await wait_idle(app, pilot)
        await pilot.press("n")
        await wait_idle(app, pilot)
        original = app.trace
        await pilot.press("j", "l", "I")  # layer 1, head 1
        await pilot.pause()
        assert app.screen.query_one("Input").value == "zero head 1.1"
        await pilot.press("enter")
        await wait_idle(app, pilot)
        branch = app.trace
        assert branch is not original and branch.steps[1].intervened
        z = np.asarray(branch.steps[1]["blocks.1.attn.hook_z"])  # [T, n_heads, d_head]
        assert not z[..., 1, :].any() and np.asarray(original.steps[1]["blocks.1.attn.hook_z"])[..., 1, :].any()
        chosen = original.steps[1].token["id"]
        expected = f"p {_softmax_p(original.steps[1], chosen):.3f} → here {_softmax_p(branch.steps[1], chosen):.3f}"
        assert expected in app.state.note
        await pilot.press("slash")  # the Tensors pane, filtered: it marks what the intervention edited
        await pilot.pause()
        await pilot.press(*"hook_z", "enter")
        await pilot.pause()
        rows = [x for x in screen(app).splitlines() if "attn.hook_z" in x and "float32" in x]
        assert [("✎" in x, "blocks.1." in x) for x in rows if "✎" in x] == [(True, True)]

    run(app, script)
