"""Interventions in the app: the intervention dialog's steering vector and activation
patching (branches checked against an independent recomputation), and the branch list (R)."""

from __future__ import annotations

import numpy as np

from stepscope.tracer import load_trace
from stepscope.tracer.session import GenerationSettings, LiveSession
from stepscope.tui.app import StepscopeApp
from tests.support.app_harness import make_factory, run, screen, wait_idle


async def click_label(app, pilot, label: str):
    """Click `[label]` where it is on the screen."""
    rows = screen(app).splitlines()
    y = next(i for i, row in enumerate(rows) if f"[{label}]" in row)
    assert await pilot.click(None, offset=(rows[y].index(f"[{label}]") + 1, y))
    await pilot.pause()


def test_live_I_steers_the_residual_stream_with_a_difference_of_two_recorded_residuals(tiny):
    app = StepscopeApp(session_factory=make_factory(tiny, max_new_tokens=4))

    async def script(app, pilot):
        await wait_idle(app, pilot)
        await pilot.press("n")
        await wait_idle(app, pilot)
        original = app.trace
        pos = original.prompt_len  # the row step 1 computes
        await pilot.press("I")
        await pilot.pause()
        await click_label(app, pilot, "steer")  # a click fills the field from the cursor (layer 0, step 1)
        field = app.screen.query_one("Input")
        assert field.value == f"steer 0 {pos} {pos - 1} 1.0"
        field.value = f"steer 0 {pos} 99 1.0"  # a position no step computed: refused in the dialog
        await pilot.press("enter")
        await pilot.pause()
        assert "no step of this trace computed position 99" in screen(app) and app.trace is original
        field.value = ""
        await pilot.press(*f"steer 0 {pos} {pos - 1} 2.5", "enter")
        await wait_idle(app, pilot)
        branch = app.trace
        assert branch is not original and branch.steps[1].intervened
        name = "blocks.0.hook_resid_post"
        # the vector, recomputed here from the original run's recorded rows
        vector = 2.5 * (np.asarray(original.steps[1][name][0], np.float32) - np.asarray(original.steps[0][name][-1], np.float32))
        np.testing.assert_allclose(branch.steps[1][name], np.asarray(original.steps[1][name]) + vector, rtol=1e-5, atol=1e-5)
        np.testing.assert_array_equal(branch.steps[1]["blocks.1.hook_resid_pre"], branch.steps[1][name])  # the next block reads it
        np.testing.assert_array_equal(branch.steps[1]["blocks.0.hook_resid_pre"], original.steps[1]["blocks.0.hook_resid_pre"])
        model = tiny[0]  # logits recomputed from the steered stream through the rest of the model
        import torch

        with torch.no_grad():
            hidden = torch.tensor(np.asarray(branch.steps[1]["blocks.1.hook_resid_post"]))[None]
            logits = model.lm_head(model.model.norm(hidden))[0, -1].numpy()
        np.testing.assert_allclose(np.asarray(branch.steps[1]["logits"][-1]), logits, rtol=1e-4, atol=1e-4)

    run(app, script)


def test_live_I_patches_an_activation_from_another_trace(tiny, tmp_path):
    other = LiveSession(tiny[0], tiny[1], "Jello", GenerationSettings(max_new_tokens=3), out=str(tmp_path / "other"))
    other.run()
    other.close()
    source = load_trace(str(tmp_path / "other"))
    alien = tmp_path / "alien"  # a trace of another model
    LiveSession(tiny[0], tiny[1], "Jello", GenerationSettings(max_new_tokens=1), out=str(alien), name="another-model").run()
    app = StepscopeApp(session_factory=make_factory(tiny, max_new_tokens=4))

    async def script(app, pilot):
        await wait_idle(app, pilot)
        await pilot.press("n")
        await wait_idle(app, pilot)
        original = app.trace
        pos = original.prompt_len
        await pilot.press("I")
        await pilot.pause()
        await click_label(app, pilot, "patch")
        field = app.screen.query_one("Input")
        assert field.value == f"patch 0 hook_resid_post {pos} "
        field.value = f"patch 0 hook_resid_post {pos} {tmp_path / 'missing'}"  # refusals: one line in the dialog
        await pilot.press("enter")
        await pilot.pause()
        error = app.screen.query_one("#prompt-error").render().plain
        assert "missing" in error and "\n" not in error and app.trace is original
        field.value = f"patch 0 hook_resid_post {pos} {alien}"
        await pilot.press("enter")
        await pilot.pause()
        error = app.screen.query_one("#prompt-error").render().plain
        assert "is a trace of another-model, not of" in error and app.trace is original, error
        field.value = f"patch 0 hook_resid_post {pos - 2} {tmp_path / 'other'}"  # a prompt position: step 0 is past
        await pilot.press("enter")
        await pilot.pause()
        assert "is computed at step 0, before this branch (step 1)" in screen(app)
        field.value = f"patch 0 hook_resid_post {pos} {tmp_path / 'other'}"
        await pilot.press("enter")
        await wait_idle(app, pilot)
        branch = app.trace
        assert branch is not original and branch.steps[1].intervened
        name = "blocks.0.hook_resid_post"
        np.testing.assert_array_equal(branch.steps[1][name][0], source.steps[1][name][0])  # the other trace's row
        assert not np.allclose(original.steps[1][name][0], source.steps[1][name][0])
        np.testing.assert_array_equal(branch.steps[1]["blocks.1.hook_resid_pre"], branch.steps[1][name])
        np.testing.assert_array_equal(branch.steps[1]["blocks.0.hook_resid_pre"], original.steps[1]["blocks.0.hook_resid_pre"])

    run(app, script)


def _rows(app) -> list[str]:
    return [row for row in screen(app).splitlines() if " steps " in row]


def test_live_R_lists_the_runs_and_enter_or_a_click_opens_one(tiny):
    app = StepscopeApp(session_factory=make_factory(tiny, max_new_tokens=4))

    async def script(app, pilot):
        await wait_idle(app, pilot)
        await pilot.press("n")
        await wait_idle(app, pilot)
        original, root = app.trace, app.session
        await pilot.press("j", "l", "I", "enter")  # b1: head 1.1 zeroed from step 1
        await wait_idle(app, pilot)
        b1 = app.trace
        await pilot.press("n")  # b1 has 3 steps
        await wait_idle(app, pilot)
        await pilot.press("home", "F")  # b2 (of b1): another token forced at step 0
        await pilot.pause()
        app.screen.query_one("Input").value = "#65 A"
        await pilot.press("enter")
        await wait_idle(app, pilot)
        b2 = app.trace
        assert b2.steps[0].token["id"] == 65
        await pilot.press("R")
        await pilot.pause()
        rows = _rows(app)
        assert len(rows) == 3 and "(original)" in rows[0] and "the original run" in rows[0] and "2 steps" in rows[0]
        assert "b1" in rows[1] and "3 steps" in rows[1] and "from step 1" in rows[1] and "zero_head blocks.1.attn.hook_z head 1" in rows[1]
        assert "b1/b2" in rows[2] and "▶" in rows[2] and "from step 0" in rows[2] and "forced '" in rows[2] and "1 steps" in rows[2]
        await pilot.press("up", "up", "enter")  # Enter opens the original run
        await pilot.pause()
        assert app.trace is original and app.session is root and app.n_steps == 2
        await pilot.press("R")
        await pilot.pause()
        lines = screen(app).splitlines()
        y = next(i for i, row in enumerate(lines) if " b1 " in row and " steps " in row)
        assert await pilot.click(None, offset=(lines[y].index(" b1 ") + 1, y))  # a click opens b1
        await pilot.pause()
        assert app.trace is b1 and app.n_steps == 3 and "RunsScreen" not in type(app.screen).__name__
        await pilot.press("R", "escape")  # Esc closes without switching
        await pilot.pause()
        assert app.trace is b1

    run(app, script)


def test_replay_R_lists_the_branches_of_a_trace(branched):
    root, forced = branched
    original = load_trace(root)
    app = StepscopeApp(trace=original)

    async def script(app, pilot):
        await pilot.press("R")
        await pilot.pause()
        rows = _rows(app)
        n = len(original.steps)
        assert len(rows) == 2 and "▶" in rows[0] and f"{n} steps" in rows[0]
        assert "b1" in rows[1] and "from step 1" in rows[1] and "forced" in rows[1] and f"{n} steps" in rows[1]
        lines = screen(app).splitlines()
        y = lines.index(rows[1])
        assert await pilot.click(None, offset=(rows[1].index("b1"), y))  # a click opens the branch
        await pilot.pause()
        assert app.trace is not original and app.trace.manifest["branch"]["name"] == "b1"
        assert app.trace.steps[1].token["id"] == forced and app.trace.steps[1].forced
        await pilot.press("R")
        await pilot.pause()
        assert "▶" in _rows(app)[1]
        await pilot.press("home", "enter")  # Enter on the original opens it again
        await pilot.pause()
        assert app.trace.path == original.path

    run(app, script)
