"""Pilot tests of the app: real key sequences on the committed fixture trace and on a tiny live
model; assertions on what the screen shows and on the app's state."""

from __future__ import annotations

import numpy as np
import pytest

from stepscope.tracer import load_trace
from stepscope.tui.app import StepscopeApp
from stepscope.tui.screens.breakpoints import BreakpointsScreen
from stepscope.tui.screens.error import ErrorScreen
from stepscope.tui.screens.help import HelpScreen
from stepscope.tui.screens.main import MainScreen
from stepscope.tui.screens.prompt import GotoScreen, PromptScreen
from stepscope.tui.screens.too_small import TooSmallScreen
from stepscope.tui.state import Cursor
from stepscope.tui.widgets.loading import LoadingPanel
from tests.support.app_harness import make_factory, wait_idle
from tests.support.paths import FIXTURE

pytestmark = pytest.mark.anyio  # async tests run on asyncio via anyio's pytest plugin

SIZE = (100, 30)


def screen_text(app) -> str:
    """The screen as plain text, one line per row."""
    strips = app.screen._compositor.render_strips()
    return "\n".join("".join(segment.text for segment in strip) for strip in strips)


def status_text(app) -> str:
    strips = app.main_screen._compositor.render_strips()
    return "".join(segment.text for segment in strips[0])


@pytest.fixture(scope="module")
def trace(fixture_trace):
    return fixture_trace


async def test_open_replay_shows_prefill(trace):
    app = StepscopeApp(trace=trace)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause()
        assert isinstance(app.screen, MainScreen)
        assert (app.step, app.layer, app.head) == (0, 0, 0)
        status = status_text(app)
        assert "replay" in status and "step 0/7 prefill" in status
        text = screen_text(app)
        assert "<|im_start|>Hi·[red]x[/red]↵" in text  # prompt with visible whitespace, markup inert
        assert "1 Cand" in text and "layers" in text and "heads" in text
        assert "(GQA ×2)" in text


async def test_stepping_keys(trace):
    app = StepscopeApp(trace=trace)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("n", "n", "right")
        assert app.step == 3
        assert "step 3/7 decode" in status_text(app)
        await pilot.press("p", "left")
        assert app.step == 1
        await pilot.press("end")
        assert app.step == 7
        await pilot.press("n")  # already at the end of a replay
        assert app.step == 7
        assert "end of trace" in status_text(app)
        await pilot.press("home")
        assert app.step == 0
        await pilot.press("p")  # clamped at the first step
        assert app.step == 0


async def test_layer_and_head_keys_clamp(trace):
    app = StepscopeApp(trace=trace)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("j", "j", "j")
        assert app.layer == 1  # 2 layers
        await pilot.press("k")
        assert app.layer == 0
        await pilot.press("down", "l", "l", "l", "l", "l")
        assert (app.layer, app.head) == (1, 3)  # 4 heads
        assert "L 1 H 3 kv 1" in status_text(app)  # GQA: query head 3 reads KV head 1 (ranges: at 120 columns)
        await pilot.press("h", "up")
        assert (app.layer, app.head) == (0, 2)
        heads = app.main_screen.query_one("#heads")
        assert (heads.cursor.layer, heads.cursor.head) == (0, 2)


async def test_goto_step(trace):
    app = StepscopeApp(trace=trace)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("g")
        assert isinstance(app.screen, GotoScreen)
        await pilot.press("9", "9", "enter")
        assert isinstance(app.screen, GotoScreen)  # refused: shown under the field
        assert "no step 99" in screen_text(app)
        await pilot.press("backspace", "backspace", "5", "enter")
        assert isinstance(app.screen, MainScreen)
        assert app.step == 5
        await pilot.press("g", "minus", "1", "enter")
        assert app.step == 7
        await pilot.press("g", "escape")
        assert isinstance(app.screen, MainScreen) and app.step == 7


async def test_panes_switch_and_follow_state(trace):
    app = StepscopeApp(trace=trace)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("n", "j", "l")
        for key, pane_id in [("2", "heatmap"), ("3", "tensors"), ("4", "lens"), ("5", "kv"), ("6", "heads"),
                             ("7", "model"), ("1", "candidates")]:
            await pilot.press(key)
            screen = app.main_screen
            assert screen.active_pane_id == pane_id
            pane = screen.active_pane
            assert pane.trace is trace
            assert pane.cursor == app.cursor == Cursor(step=1, layer=1, head=1)
        await pilot.press("6")
        assert "attention entropy per head" in screen_text(app)
        await pilot.press("1")
        text = screen_text(app)
        assert "top-p" in text and "▶" in text  # cut-off line and the chosen mark


async def test_hidden_pane_is_not_updated(trace):
    app = StepscopeApp(trace=trace)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("2")
        heatmap = app.main_screen.active_pane
        await pilot.press("1", "n", "n")
        assert heatmap.cursor.step == 0  # hidden: not told
        await pilot.press("2")
        assert heatmap.cursor.step == 2  # brought up to date when shown


async def test_candidates_pane_marks_chosen(trace):
    app = StepscopeApp(trace=trace)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("n")
        text = screen_text(app)
        sampling = trace.steps[1].sampling
        assert "T=0.9 · top-k 40 · top-p 0.9" in text
        assert "raw 259→/T 259→top-k 40→top-p 35→min-p 35→chosen" in text
        chosen_line = next(line for line in text.splitlines() if "▶" in line)
        assert str(sampling["chosen_id"]) in chosen_line


async def test_breakpoints_add_continue_remove(trace):
    app = StepscopeApp(trace=trace)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("b")
        assert isinstance(app.screen, BreakpointsScreen)
        await pilot.press(*"bogus", "enter")
        assert "cannot read" in screen_text(app) or "unknown" in screen_text(app)
        await pilot.press(*["backspace"] * 5, *"step=4", "enter")
        await pilot.press(*"nan", "enter")
        assert [bp.spec for bp in app.breakpoints] == ["step=4", "nan"]
        assert "at step 4" in screen_text(app)
        await pilot.press("escape")
        assert isinstance(app.screen, MainScreen)
        await pilot.press("c")
        assert app.step == 4
        assert "breakpoint at step 4" in status_text(app)
        await pilot.press("c")  # no more hits: runs to the end of the replay
        assert app.step == 7
        assert "end of trace" in status_text(app)
        await pilot.press("b", "tab", "d")
        assert [bp.spec for bp in app.breakpoints] == ["nan"]
        await pilot.press("d")
        assert len(app.breakpoints) == 0
        await pilot.press("escape")


async def test_help_lists_every_key(trace):
    app = StepscopeApp(trace=trace)
    async with app.run_test(size=(120, 60)) as pilot:
        await pilot.press("question_mark")
        assert isinstance(app.screen, HelpScreen)
        sections = dict(app.screen.sections)
        debugger = dict(sections["Debugger"])
        for keys in ["n / →", "p / ←", "c", "Esc", "g", "Home", "End", "j / ↓", "k / ↑", "l", "h", "b", "w", "?", "q",
                     "1", "7", "f"]:
            assert keys in debugger, keys
        text = screen_text(app)
        assert "Continue until EOS" in text and "Breakpoints" in text
        await pilot.press("escape")
        assert isinstance(app.screen, MainScreen)


async def test_too_small_notice():
    app = StepscopeApp(trace=load_trace(FIXTURE))
    async with app.run_test(size=(60, 20)) as pilot:
        await pilot.pause()
        assert isinstance(app.screen, TooSmallScreen)
        assert "terminal too small" in screen_text(app)
        assert "60×20" in screen_text(app)
        await pilot.resize_terminal(80, 24)
        await pilot.pause()
        assert isinstance(app.screen, MainScreen)
        await pilot.resize_terminal(79, 24)
        await pilot.pause()
        assert isinstance(app.screen, TooSmallScreen)


async def test_usable_at_80x24(trace):
    app = StepscopeApp(trace=trace)
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.press("n")
        text = screen_text(app)
        assert "step 1/7" in text and "1 Cand" in text and " 7 " in text  # at 80 columns: keys, the active tab named
        assert "Quit" in text.splitlines()[-1]  # the footer
        await pilot.press("f")  # sidebar off: the pane gets the full width
        assert not app.main_screen.query_one("#sidebar").display
        await pilot.press("f")
        assert app.main_screen.query_one("#sidebar").display


async def test_write_in_replay_explains(trace):
    app = StepscopeApp(trace=trace)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("w")
        await pilot.pause()
        assert isinstance(app.screen, MainScreen)
        assert any("already on disk" in str(n.message) for n in app._notifications)


async def test_token_text_is_inert(tmp_path):
    """A token holding `[red]x[/red]`, an ANSI escape and a bell shows literally."""
    from tests.support.synthetic_trace import build_trace

    path = build_trace(tmp_path / "syn", n_decode=4)
    app = StepscopeApp(trace=load_trace(path))
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("n", "n")  # step 2 chose "\x07", step 1 chose "\x1b[31m"
        text = screen_text(app)
        assert "[red]x[/red]" in text
        assert "\\x1b[31m" in text and "\\x07" in text
        assert "\x1b" not in text and "\x07" not in text
        assert "chose" not in text or True
        status = status_text(app)
        assert "\\x07" in status


# -- live session (tiny random model) ---------------------------------------------------------

async def test_live_session_steps_continues_and_writes(tiny, tmp_path):
    progress_seen = []
    app = StepscopeApp(session_factory=make_factory(tiny, max_new_tokens=5))
    async with app.run_test(size=SIZE) as pilot:
        panel = app.main_screen.query_one(LoadingPanel)
        progress_seen.append(panel.stage)
        await wait_idle(app, pilot)
        assert app.state.source == "live" and app.n_steps == 1 and app.step == 0
        assert "live" in status_text(app) and "step 0/0 prefill" in status_text(app)
        await pilot.press("n")  # at the end: computes step 1 in a worker
        await wait_idle(app, pilot)
        assert (app.n_steps, app.step) == (2, 1)
        await pilot.press("p")
        assert app.step == 0
        await pilot.press("c")  # continue to the token limit
        await wait_idle(app, pilot)
        assert app.session.finished and app.session.stop_reason == "max_new_tokens"
        assert app.step == app.n_steps - 1 == 4
        assert "finished (max_new_tokens)" in status_text(app)
        await pilot.press("n")
        assert "end of generation" in status_text(app)
        out = tmp_path / "saved"
        await pilot.press("w")
        assert isinstance(app.screen, PromptScreen)
        app.screen.query_one("Input").value = str(out)
        await pilot.press("enter")
        for _ in range(200):
            await pilot.pause(0.02)
            if (out / "manifest.json").exists() and "written" in status_text(app):
                break
        saved = load_trace(out)
        assert len(saved.steps) == 5
        assert [t["id"] for t in saved.tokens] == [t["id"] for t in app.trace.tokens]
    assert progress_seen


async def test_live_steps_list_the_names_a_trace_on_disk_lists(tiny):
    """The UI's own Trace of a live session reads the steps like a trace opened from disk: the names
    the reader computes (logit lens, attn.hook_result, hook_normalized) are there, with the values
    a reader of the directory gets."""
    app = StepscopeApp(session_factory=make_factory(tiny, max_new_tokens=3))
    async with app.run_test(size=SIZE) as pilot:
        await wait_idle(app, pilot)
        await pilot.press("n")
        await wait_idle(app, pilot)
        disk = load_trace(app.session.path)
        for live_step, disk_step in zip(app.trace.steps, disk.steps):
            assert live_step.names == disk_step.names
            for name in ("logit_lens.ids", "blocks.0.attn.hook_result", "blocks.0.ln1.hook_normalized"):
                assert name in live_step.names and name not in live_step._load_header()
                np.testing.assert_array_equal(live_step[name], disk_step[name])


async def test_live_continue_stops_at_breakpoint_and_any_key_pauses(tiny):
    app = StepscopeApp(session_factory=make_factory(tiny, max_new_tokens=40, slow=0.05))
    async with app.run_test(size=SIZE) as pilot:
        await wait_idle(app, pilot)
        app.breakpoints.add("step=3")
        await pilot.press("c")
        await wait_idle(app, pilot)
        assert (app.step, app.n_steps) == (3, 4), status_text(app)
        assert "breakpoint at step 3" in status_text(app)
        app.breakpoints.clear()
        await pilot.press("c")
        await pilot.pause(0.2)
        assert app.continuing
        await pilot.press("x")  # any key pauses
        await wait_idle(app, pilot)
        assert not app.continuing
        assert app.n_steps < 40 and not app.session.finished
        assert "paused" in status_text(app)
        assert app.step == app.n_steps - 1


async def test_live_error_shows_modal_and_session_survives(tiny):
    app = StepscopeApp(session_factory=make_factory(tiny, max_new_tokens=6, fail_at=2))
    async with app.run_test(size=SIZE) as pilot:
        await wait_idle(app, pilot)
        assert app.n_steps == 1
        await pilot.press("n")  # the second call to step() fails
        for _ in range(200):
            await pilot.pause(0.02)
            if isinstance(app.screen, ErrorScreen):
                break
        assert isinstance(app.screen, ErrorScreen)
        await pilot.pause()
        assert "CUDA out of memory (simulated)" in screen_text(app)
        assert not app.busy
        await pilot.press("enter")
        assert isinstance(app.screen, MainScreen)
        assert app.step == 0 and app.n_steps == 1  # the recorded step is still there
        await pilot.press("n")  # and the session still works
        await wait_idle(app, pilot)
        assert (app.n_steps, app.step) == (2, 1)


async def test_live_factory_failure_is_reported():
    def factory():
        raise OSError("model not found: nowhere/nothing")

    app = StepscopeApp(session_factory=factory)
    async with app.run_test(size=SIZE) as pilot:
        for _ in range(100):
            await pilot.pause(0.02)
            if isinstance(app.screen, ErrorScreen):
                break
        assert isinstance(app.screen, ErrorScreen)
        await pilot.pause()
        text = screen_text(app)
        assert "Could not start the live session" in text and "model not found" in text
        await pilot.press("escape")
        await pilot.press("n", "c", "g", "w")  # nothing loaded: keys do nothing harmful
        assert app.trace is None


async def test_loading_shows_progress_and_stays_responsive():
    import threading

    release = threading.Event()

    def factory(progress):
        progress("loading SmolLM2-135M-Instruct", 0.4)
        release.wait(10)
        raise RuntimeError("no model in this test")

    app = StepscopeApp(session_factory=factory)
    async with app.run_test(size=(80, 24)) as pilot:
        for _ in range(100):
            await pilot.pause(0.02)
            if "loading SmolLM2" in screen_text(app):
                break
        text = screen_text(app)
        assert "loading SmolLM2-135M-Instruct" in text and "40%" in text
        await pilot.press("question_mark")  # the UI answers while the model loads
        assert isinstance(app.screen, HelpScreen)
        await pilot.press("escape")
        release.set()
        for _ in range(100):
            await pilot.pause(0.02)
            if isinstance(app.screen, ErrorScreen):
                break
        await pilot.pause()
        assert "no model is loaded" in screen_text(app)


def test_constructor_modes(trace):
    assert StepscopeApp(trace=trace).state.source == "replay"
    app = StepscopeApp()
    assert app.state.source == "live" and app.session_factory is not None
    with pytest.raises(ValueError):
        StepscopeApp(trace=trace, session_factory=lambda: None)


async def test_corrupted_step_is_reported_and_the_rest_stays_usable(tmp_path):
    import shutil

    bad = tmp_path / "bad"
    shutil.copytree(FIXTURE, bad)
    with open(bad / "step_00002.safetensors", "r+b") as fh:  # same size, garbage header
        fh.write(b"\xff" * 64)
    app = StepscopeApp(trace=load_trace(str(bad)))
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("n", "n")  # step 1, then step 2 (corrupted)
        await pilot.pause()
        assert app.step == 1 and isinstance(app.screen, ErrorScreen)
        assert "step_00002.safetensors" in app.last_error and "corrupted" in app.last_error
        await pilot.press("escape")
        await pilot.press("g")
        await pilot.pause()
        assert isinstance(app.screen, GotoScreen)
        await pilot.press("3", "enter")
        await pilot.pause()
        assert app.step == 3 and isinstance(app.screen, MainScreen)  # past the bad step
        assert "step 3/7" in status_text(app)
