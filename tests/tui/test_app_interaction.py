"""The app's core loop, driven with Pilot (keys and clicks) or the CLI: the first live screen,
clicks on every clickable widget, `run` validation, Home/End, sticky statuses, `w` during `c`,
Ctrl-C, errors in views, inert strings from traces and the file system, layout at small sizes."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

from stepscope.tui.app import StepscopeApp
from stepscope.tui.screens.error import ErrorScreen
from stepscope.tui.screens.main import MainScreen
from stepscope.tui.screens.prompt import PromptScreen
from tests.support.paths import FIXTURE, ROOT

pytestmark = pytest.mark.anyio


def screen_text(app) -> str:
    return "\n".join(strip.text for strip in app.screen._compositor.render_strips())


def status_text(app) -> str:
    return app.main_screen._compositor.render_strips()[0].text


def region_text(app, widget) -> str:
    """The text the screen shows inside `widget`'s region."""
    region = widget.region
    lines = app.screen._compositor.render_strips()[region.y : region.bottom]
    return "\n".join(line.text[region.x : region.right] for line in lines)


async def wait_for(pilot, predicate, timeout=30.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        await pilot.pause(0.02)
        if predicate():
            return
    raise AssertionError("timed out")


def idle(app):
    return app.trace is not None and app.n_steps and not app.busy and not app.continuing


# -- the first live screen is fully drawn right after the prefill ----------------------------------

@pytest.mark.parametrize("size", [(120, 40), (80, 24)])
async def test_bare_stepscope_first_screen_is_fully_drawn(tiny_model_dir, size):
    from stepscope.cli.main import parse_args
    from stepscope.cli.run import live_app

    app = live_app(parse_args(["--model", tiny_model_dir, "--max-new-tokens", "3"]))  # bare `stepscope` path
    async with app.run_test(size=size) as pilot:
        await wait_for(pilot, lambda: idle(app))
        await pilot.pause()
        screen = app.main_screen
        assert "step 0/0 prefill" in status_text(app)
        candidates = region_text(app, screen.pane("candidates"))
        assert "no step yet" not in candidates and "▶" in candidates  # the chosen row
        layers = region_text(app, screen.query_one("#layers"))
        heads = region_text(app, screen.query_one("#heads"))
        assert " 0 " in layers and " 1 " in layers  # one row per layer (2 layers)
        assert any(line.strip().startswith("3 ") for line in heads.splitlines())  # head 3 of 4
        await pilot.press("2")  # a pane shown later is drawn from the grown trace too
        assert "no trace" not in region_text(app, screen.pane("heatmap"))


async def test_only_the_ui_thread_touches_the_apps_trace(tiny, monkeypatch):
    import threading

    from stepscope.tracer.reader import Trace

    threads = set()
    real_add, real_getitem = Trace.add_steps, type(Trace("", {"steps": []}).steps).__getitem__
    ui_traces = []

    def add_steps(self, entries, tokens, model=None):
        threads.add(threading.current_thread().name)
        ui_traces.append(self)
        return real_add(self, entries, tokens, model)

    def getitem(self, i):
        if any(self is t.steps for t in ui_traces):
            threads.add(threading.current_thread().name)
        return real_getitem(self, i)

    monkeypatch.setattr(Trace, "add_steps", add_steps)
    monkeypatch.setattr(type(Trace("", {"steps": []}).steps), "__getitem__", getitem)
    app = StepscopeApp(session_factory=make_factory(tiny, max_new_tokens=4))
    async with app.run_test(size=(100, 30)) as pilot:
        await wait_for(pilot, lambda: idle(app))
        await pilot.press("c")
        await wait_for(pilot, lambda: idle(app) and app.state.finished)
        assert app.trace is not app.session.trace  # the session's own trace stays in the worker
        assert len(app.trace.steps) == len(app.session.trace.steps) == 4
        assert [t["id"] for t in app.trace.tokens] == [t["id"] for t in app.session.trace.tokens]
    assert threads == {threading.main_thread().name}


# -- every clickable widget, clicked ---------------------------------------------------------------

async def test_click_every_clickable_widget(fixture_trace):
    app = StepscopeApp(trace=fixture_trace)
    async with app.run_test(size=(120, 40)) as pilot:
        screen = app.main_screen
        layers = screen.query_one("#layers")
        content = layers.content_region
        await pilot.click(layers, offset=(content.x - layers.region.x + 2, content.y - layers.region.y + 2))
        assert app.layer == 1 and isinstance(app.screen, MainScreen)  # row 2 = layer 1 (row 0: header)
        heads = screen.query_one("#heads")
        content = heads.content_region
        await pilot.click(heads, offset=(content.x - heads.region.x + 2, content.y - heads.region.y + 3))
        assert app.head == 2
        await pilot.click(heads, offset=(1, 0))  # the border: nothing
        assert app.head == 2 and isinstance(app.screen, MainScreen)
        for pane_id in ("heatmap", "tensors", "lens", "kv", "heads", "model", "candidates"):
            await pilot.click(f"#tab-{pane_id}")
            assert screen.active_pane_id == pane_id
        await pilot.click("#tab-heads")
        overview = screen.pane("heads")
        await pilot.pause()
        await pilot.click(overview, offset=(overview.ROW_LABEL + 3 * 3, 2))  # layer 0, head 3
        assert (app.layer, app.head) == (0, 3)
        footer_next = next(k for k in screen.query("FooterKey") if k.action == "app.next_step")
        await pilot.click(footer_next)
        assert app.step == 1
        await pilot.click("#tab-kv")
        await pilot.click(screen.pane("kv"), offset=(2, screen.pane("kv").first_row + 1))  # the row of layer 1
        assert app.layer == 1
        await pilot.click("#tab-tensors")
        await pilot.pause()  # the legend above the list wraps to the width
        tensors = screen.query_one("TensorList")
        row = round(tensors.scroll_y) + 2  # the list may be scrolled to its selected tensor
        await pilot.click(tensors, offset=(2, 3))  # the third row shown (row 0: the header)
        assert tensors.cursor == row and screen.pane("tensors").selected == tensors.infos[row].name
        await pilot.click("#strip", offset=(3, 0))  # the first token of the strip (<|im_start|>): its query row
        assert app.cursor.query == 0
        await pilot.click("#tab-heatmap")
        heatmap = screen.pane("heatmap")
        await pilot.pause()
        amap = heatmap.last_map
        assert amap is not None
        grid_y, grid_x, _, _ = heatmap._layout
        pad = heatmap.styles.padding
        await pilot.click(heatmap, offset=(pad.left + grid_x, pad.top + grid_y))  # the first drawn cell
        assert (app.cursor.query, app.cursor.key) == (amap.row_positions[0], amap.col_positions[0])
        app.report_error("a test error", "something went wrong")
        await pilot.pause()
        assert isinstance(app.screen, ErrorScreen)
        await pilot.click("#error-ok")
        assert isinstance(app.screen, MainScreen)


# -- `run` validates like `trace`, before the app starts ---------------------------------------------

def run_cli(*args, timeout=60):
    env = dict(os.environ, PYTHONPATH=ROOT, CUDA_VISIBLE_DEVICES="")
    return subprocess.run([sys.executable, "-m", "stepscope", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=timeout, stdin=subprocess.DEVNULL, env=env)


@pytest.mark.parametrize("args, words", [
    (["run", "--device", "cuda"], "CUDA is not available"),
    (["--device", "cuda:0"], "CUDA is not available"),
    (["run", "--device", "tpu"], "unknown device"),
    (["run", "--model", "./no/such/dir"], "no such model directory"),
    (["run", "--model", "missing.gguf"], "no such GGUF file"),
])
def test_run_refuses_bad_model_options_before_the_app(args, words):
    res = run_cli(*args)
    assert res.returncode == 2, res.stderr
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and words in lines[0], res.stderr
    assert "\x1b" not in res.stdout  # the app never drew


def test_run_and_view_without_a_terminal_exit_2_at_once(tiny_model_dir):
    for args in (["run", "--model", tiny_model_dir], ["view", FIXTURE]):
        res = run_cli(*args)
        assert res.returncode == 2 and "needs a terminal" in res.stderr and len(res.stderr.splitlines()) == 1


# -- Home/End scroll a focused pane; statuses clear; `w` during `c`; Ctrl-C ----------------------------

async def test_home_end_scroll_the_focused_lens(fixture_trace):
    app = StepscopeApp(trace=fixture_trace)
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.press("n", "4")
        app.main_screen.pane("lens").focus()
        await pilot.press("end", "home", "pagedown", "down")
        assert app.step == 1 and app.layer == 0  # the focused Lens took the keys (nothing to scroll)
        await pilot.press("7")  # the Model pane is longer than the screen
        model = app.main_screen.pane("model")
        model.focus()
        await pilot.press("end")
        assert app.step == 1 and model.scroll_y == model.max_scroll_y > 0
        await pilot.press("home")
        assert app.step == 1 and model.scroll_y == 0
        await pilot.press("escape", "end")  # unfocused: End is the last step again
        assert app.step == app.n_steps - 1


async def test_statuses_clear_after_navigating(fixture_trace):
    app = StepscopeApp(trace=fixture_trace)
    async with app.run_test(size=(100, 30)) as pilot:
        await pilot.press("end", "n")
        assert "end of trace" in status_text(app)
        await pilot.press("j")
        assert "end of trace" not in status_text(app)
        app.breakpoints.add("step=3")
        await pilot.press("home", "c")
        assert app.step == 3 and "breakpoint at step 3" in status_text(app)
        await pilot.press("n")
        assert "breakpoint" not in status_text(app)
        await pilot.press("c")  # no breakpoint ahead: to the end
        assert "end of trace" in status_text(app)
        await pilot.press("g", "2", "enter")
        assert app.step == 2 and "end of trace" not in status_text(app)


def make_factory(tiny, max_new_tokens=40, slow=0.0):
    from stepscope.tracer.session import GenerationSettings, LiveSession

    def factory(progress=None):
        session = LiveSession(tiny[0], tiny[1], "Hello", GenerationSettings(max_new_tokens=max_new_tokens))
        real_step = session.step

        def step():
            time.sleep(slow)
            return real_step()

        session.step = step
        return session

    return factory


async def test_w_during_continue_pauses_and_writes(tiny, tmp_path):
    app = StepscopeApp(session_factory=make_factory(tiny, slow=0.05))
    async with app.run_test(size=(120, 30), notifications=True) as pilot:
        await wait_for(pilot, lambda: idle(app))
        await pilot.press("c")
        await wait_for(pilot, lambda: app.n_steps >= 3)
        assert app.continuing
        await pilot.press("w")
        await pilot.pause()
        assert isinstance(app.screen, PromptScreen)  # the write dialog opened
        await wait_for(pilot, lambda: not app.continuing)  # and the continue paused
        out = tmp_path / "[bold red]x"  # a directory name that is also Rich markup
        app.screen.query_one("Input").value = str(out)
        await pilot.press("enter")
        await wait_for(pilot, lambda: (out / "manifest.json").exists() and "written" in status_text(app))
        await pilot.pause()
        assert "[bold red]x" in screen_text(app)  # the notification shows the name literally


async def test_ctrl_c_quits(fixture_trace):
    app = StepscopeApp(trace=fixture_trace)
    async with app.run_test(size=(100, 30)) as pilot:
        await pilot.press("ctrl+c")
        await pilot.pause()
        assert app._exit
    assert app.return_code == 130  # the README's status for Ctrl-C


# -- errors in views are dialogs, strings are inert -----------------------------------------------------

async def test_a_failing_pane_opens_the_error_dialog_and_the_debugger_goes_on(fixture_trace, monkeypatch):
    from stepscope.tui.widgets.logit_lens import LogitLensPane

    def broken(self):
        raise ValueError("lens exploded [bold]")

    monkeypatch.setattr(LogitLensPane, "lines", broken)
    app = StepscopeApp(trace=fixture_trace)
    async with app.run_test(size=(100, 30)) as pilot:
        await pilot.press("4")
        await wait_for(pilot, lambda: isinstance(app.screen, ErrorScreen))
        await pilot.pause()
        assert "lens exploded [bold]" in screen_text(app)
        await pilot.press("escape")
        await pilot.press("1", "n")
        assert app.step == 1 and isinstance(app.screen, MainScreen)
    assert app.return_code in (0, None) and app.crash is None


async def test_a_failing_key_opens_the_error_dialog(fixture_trace, monkeypatch):
    def broken(self):
        raise RuntimeError("goto broke")

    monkeypatch.setattr(StepscopeApp, "action_goto", broken)
    app = StepscopeApp(trace=fixture_trace)
    async with app.run_test(size=(100, 30)) as pilot:
        await pilot.press("g")
        await pilot.pause()
        assert isinstance(app.screen, ErrorScreen) and "goto broke" in screen_text(app)
        await pilot.press("escape", "n")
        assert app.step == 1


def test_a_crash_exits_non_zero_with_one_line(tmp_path):
    script = tmp_path / "crash.py"
    script.write_text(
        "import sys\n"
        "from stepscope.tracer import load_trace\n"
        "from stepscope.tui.app import StepscopeApp\n"
        "from stepscope.cli.common import run_app\n"
        "class Crashing(StepscopeApp):\n"
        "    def on_mount(self):\n"
        "        raise RuntimeError('boom \\x1b[31m')\n"
        f"app = Crashing(trace=load_trace({FIXTURE!r}))\n"
        "orig = app.run\n"
        "app.run = lambda: orig(headless=True)\n"
        "sys.exit(run_app(app))\n"
    )
    env = dict(os.environ, PYTHONPATH=ROOT)
    env.pop("STEPSCOPE_DEBUG", None)
    res = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=60, env=env)
    assert res.returncode == 1
    lines = [line for line in res.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "internal error: RuntimeError: boom" in lines[0], res.stderr
    assert "\x1b" not in res.stderr and "\\x1b" in lines[0]


async def test_trace_strings_are_inert_in_the_app(tmp_path):
    import shutil

    from stepscope.tracer import load_trace
    from tests.support.trace_edit import edit_manifest

    bad = tmp_path / "[@click=app.quit]"
    shutil.copytree(FIXTURE, bad)
    edit_manifest(str(bad), lambda m: m["model"].update(name="[bold red]evil\x1b[2J"))
    app = StepscopeApp(trace=load_trace(str(bad)))
    async with app.run_test(size=(160, 40), notifications=True) as pilot:
        await pilot.press("w")  # replay: the notification names the directory
        await pilot.pause()
        text = screen_text(app)
        assert "[@click=app.quit]" in text
        assert "[bold red]evil\\x1b[2J" in status_text(app)
        assert "\x1b" not in text
        assert not app._exit


# -- layout at 80×24 and 120×40 -----------------------------------------------------------------------

def test_tensor_columns_drop_in_the_stated_order():
    from stepscope.tui.widgets.tensor_list import layout

    seen = []
    for width in range(200, 20, -1):
        keys = {key for key, _, _ in layout(width)[1]}
        if keys not in seen:
            seen.append(keys)
    dropped = [next(iter(a - b)) for a, b in zip(seen, seen[1:])]
    assert dropped[:3] == ["hist", "norm", "min"]  # histogram, then ‖x‖, then min
    for width in range(30, 200, 7):  # every column shown is whole: the widths add up
        name_width, cols = layout(width)
        assert name_width + sum(1 + w for _, _, w in cols) == width


async def test_tensors_at_80x24_clip_no_value_and_keep_names_distinct(fixture_trace):
    app = StepscopeApp(trace=fixture_trace)
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.press("3")
        tensors = app.main_screen.query_one("TensorList")
        tensors.focus()
        seen = set()
        for _ in range(len(tensors.infos)):
            text = region_text(app, tensors)
            rows = text.splitlines()[1:]
            for row in rows:
                if row.strip():
                    name, *rest = row.split()
                    assert {"float32", "int64"} & set(rest), row  # the dtype whole, never `float3`
                    seen.add(name)
            await pilot.press("pagedown")
        assert "blocks.0.attn.hook_rot_q" in seen or "blocks.0.attn.…rot_q" in seen
        assert len(seen) == len(tensors.infos)  # middle ellipsis: distinct names stay distinct


async def test_text_panes_fit_the_width_with_an_ellipsis(fixture_trace):
    app = StepscopeApp(trace=fixture_trace)
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.press("n", "5")
        kv = app.main_screen.pane("kv")
        lines = [line.strip() for line in region_text(app, kv).splitlines()]
        assert lines[0] == "DECODE step 1"  # the header breaks between its parts, never through a figure
        assert "position 17 appended to a cache of 17" in lines[1]
        assert any(line.startswith("total ") and line.endswith("KiB") for line in lines)
        assert any(line.startswith("before/after") for line in lines)  # the legend wraps between its parts
        assert any("+new: appended by this step" in line for line in lines) and not any(l.endswith("…") for l in lines)
        assert kv.max_scroll_x == 0  # no horizontal scrolling


async def test_op_lines_use_the_width_at_120x40(fixture_trace):
    app = StepscopeApp(trace=fixture_trace)
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.press("3")
        tensors = app.main_screen.query_one("TensorList")
        tensors.select_name("blocks.0.attn.hook_attn_scores")
        await pilot.pause()
        detail = region_text(app, app.main_screen.query_one("TensorDetail"))
        assert "→ scores [4, 17, 17]" in detail.replace("\n", " ")  # wrapped, never cut
        assert "…" not in detail


# -- every number explained ---------------------------------------------------------------------------

async def test_every_pane_has_a_legend(fixture_trace):
    app = StepscopeApp(trace=fixture_trace)
    async with app.run_test(size=(160, 40)) as pilot:
        await pilot.press("n")
        screen = app.main_screen
        assert "hook_resid_post at the last position" in screen.query_one("#layers").tooltip
        assert "entropy of its last query row" in screen.query_one("#heads").tooltip
        expected = {"candidates": "final, renormalised", "tensors": "‖x‖ (L2 norm)", "lens": "ln_final(resid_post)",
                    "kv": "+new: appended", "heads": "attention entropy per head", "model": "share: of the total"}
        for pane_id, words in expected.items():
            await pilot.press(str([p for p, _, _ in __import__("stepscope.tui.screens.main", fromlist=["PANES"]).PANES].index(pane_id) + 1))
            await pilot.pause()
            assert words in region_text(app, screen.pane(pane_id)), pane_id
