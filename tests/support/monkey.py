"""A seeded monkey for the whole app (shared by tests/tui/test_monkey.py and bench/monkey.py).

Random keys (the debugger's, the panes' own, the branch and dialog keys), clicks at random offsets in
every visible widget's region, terminal resizes, pane switches, the command palette and random input
in the dialogs those open, through a replay session (a trace with a branch) or a live session of a
tiny random model. Every string the trace or the model holds (the prompt, the model's name, the
device, the stop reason, token texts) carries terminal escapes and C1 controls.

After every event the invariants are checked: the app still runs; no exception escaped (`app.crash`,
the return code); no error dialog opened (every failure the app reports is a failure of the monkey,
unless its message is one of `EXPECTED_REFUSALS`); the status bar shows the cursor's step, layer and
head; no ESC / C0 / DEL / C1 character reaches the rendered screen.

The events are drawn from `random.Random(seed)`, the same number of draws per event whatever the
app's state, so a seed replays the same sequence of draws; a live session's workers run in threads,
so what an event does there can depend on timing (the monkey often lets them finish first).
"""

from __future__ import annotations

import asyncio
import os
import random
import re
import shutil
import time
import traceback
from dataclasses import dataclass, field

from textual.screen import ModalScreen
from textual.widgets import Input

HOSTILE = "\x1b]0;pwned\x07\x1b[2J\x9b31m[bold red]x[/]\u202e"
"""Terminal control, a C1 CSI, markup and a bidi override: what every string of the data holds."""

HOSTILE_PROMPT = f"Hi {HOSTILE} there"
HOSTILE_NAME = f"tiny{HOSTILE}"

SIZES = [(80, 24), (120, 40), (200, 60), (81, 25), (97, 31), (133, 43), (111, 29), (79, 23), (90, 24)]
"""Terminal sizes a resize picks from (79×23 is below the minimum: the too-small notice)."""

# the main screen's keys, the panes' own keys, a few named keys; never q / Ctrl+C (they quit)
MAIN_KEYS = ["n", "p", "right", "left", "c", "g", "home", "end", "j", "k", "down", "up", "l", "h",
             "1", "2", "3", "4", "5", "6", "7", "8", "9", "0", "f", "D", "B", "R", "I", "F", "b", "slash",
             "equals_sign", "o", "w", "question_mark", "tab", "shift+tab", "escape", "enter"]
PANE_KEYS = ["e", "o", "O", "s", "r", "t", "m", "a", "d", "delete", "comma", "full_stop", "left_square_bracket",
             "right_square_bracket", "plus", "minus", "pageup", "pagedown", "T", "K", "P", "M", "N", "space",
             "x", "y", "z", "backspace"]

# what the monkey types into a dialog (appended to, or instead of, the field's text)
TYPED = ["1", "-1", "0", "99", "x", "#3", "#999999", "a", "zero head 0.1", "mean head 1.3", "scale head 0.0 0.5",
         "zero neuron 0 0", "clamp neuron 1 5 2.0", "steer 0 3 2 1.0", "patch 0 hook_resid_post 3 /nonexistent",
         "zero head 9.9", 'p(" a")', "entropy", "rank", "p<0.3", "entropy > 1", "layer >", "(((", "resid_post",
         "attn 1", "blocks.*.hook_z", "temperature=0.5", "top_k=3", "max_new_tokens=9", "sample=on", "seed=-1",
         "top_p=2", "garbage=1", "step", "L1", "", " "]


@dataclass
class MonkeyFailure(AssertionError):
    """The first broken invariant: the seed and the event that broke it replay it."""

    seed: int
    index: int
    event: str
    problem: str
    log: list[str] = field(default_factory=list)

    def __str__(self) -> str:
        recent = "\n  ".join(self.log[-12:])
        return (f"monkey seed {self.seed}, event {self.index} ({self.event}): {self.problem}\n"
                f"  last events:\n  {recent}")


@dataclass
class Outcome:
    seed: int
    events: int
    seconds: float
    failure: MonkeyFailure | None
    log: list[str]
    seen: dict[str, int] = field(default_factory=dict)
    """How often each screen was on top after an event, and the runs (branches) the session reached."""


EXPECTED_REFUSALS: list[re.Pattern] = []
"""Error dialog messages that are a refusal the user is expected to meet, not a failure (none so far)."""

CONTROL = re.compile("[\x00-\x1f\x7f-\x9f]")


def control_characters(strips) -> list[str]:
    """The ESC / C0 / DEL / C1 characters in the text of rendered strips (what reaches the terminal)."""
    found = []
    for y, strip in enumerate(strips):
        for segment in strip:
            if segment.control:
                continue
            for match in CONTROL.finditer(segment.text):
                found.append(f"{match.group()!r} in row {y}: {segment.text!r}")
    return found


def screen_strips(screen) -> list:
    return screen._compositor.render_strips()


def status_line(app) -> str:
    strips = screen_strips(app.main_screen)
    return "".join(segment.text for segment in strips[0]) if strips else ""


# -- the data: a hostile replay trace with a branch, a hostile live session -----------------------
def hostile_session(model, tokenizer, max_new_tokens: int = 8, out: str | None = None):
    """A live session of the tiny model on a prompt and under a name full of terminal controls."""
    from stepscope.tracer.session import GenerationSettings, LiveSession

    return LiveSession(model, tokenizer, HOSTILE_PROMPT, GenerationSettings(max_new_tokens=max_new_tokens),
                       out=out, name=HOSTILE_NAME)


def hostile_factory(model, tokenizer, max_new_tokens: int = 8):
    """`StepscopeApp(session_factory=...)` for a live hostile session."""
    def factory(progress=None):
        if progress is not None:
            progress(f"building {HOSTILE_NAME}", 0.5)
        return hostile_session(model, tokenizer, max_new_tokens)

    return factory


def hostile_replay_trace(root: str, model, tokenizer) -> str:
    """A recorded trace (prompt, model name, device, stop reason, sampler stage names and token texts
    full of terminal controls) with one branch forced at step 1 to its runner-up; its directory."""
    import numpy as np

    from stepscope.tracer.branch import BranchSet
    from tests.support.trace_edit import edit_entries, edit_manifest

    if os.path.exists(root):
        shutil.rmtree(root)
    session = hostile_session(model, tokenizer, max_new_tokens=5, out=root)
    tree = BranchSet(session)
    while session.step() is not None:
        pass
    chosen = session.trace.steps[1].token["id"]
    logits = np.asarray(session.trace.steps[1]["logits"][-1])
    other = int(next(i for i in np.argsort(-logits) if int(i) != chosen))
    tree.branch(step=1, token=other).run()
    tree.close()

    def manifest(m):
        m["device"] = HOSTILE
        m["model"]["name"] = HOSTILE  # (stop_reason takes known values only: a hostile one is refused)
        m["model"]["data_flow"] = [HOSTILE]
        m["tokens"][1]["text"] = HOSTILE

    edit_manifest(root, manifest)
    edit_entries(root, lambda es: [e["sampling"].setdefault("stages", []).append({"name": HOSTILE[:40], "kept": 1})
                                   for e in es])
    return root


# -- the monkey -----------------------------------------------------------------------------------
class Monkey:
    """Drives `app` through `pilot` with events drawn from `seed`; `check()` after every event."""

    def __init__(self, app, pilot, seed: int, typed: list[str] = (), settle: float = 10.0) -> None:
        self.app, self.pilot, self.seed = app, pilot, seed
        self.rng = random.Random(seed)
        self.typed = list(TYPED) + list(typed)
        self.settle = settle
        self.log: list[str] = []
        self.reported = 0
        self.seen: dict[str, int] = {}

    # what is on top
    def _dialog_input(self) -> Input | None:
        focused = self.app.focused
        if isinstance(self.app.screen, ModalScreen) and isinstance(focused, Input):
            return focused
        return None

    def _widgets(self) -> list:
        screen = self.app.screen
        area = screen.size.region
        out = []
        for widget in screen.walk_children(with_self=False):
            try:
                region = widget.region.intersection(area)
            except Exception:  # noqa: BLE001 - a widget being removed
                continue
            if widget.display and widget.visible and region.area > 0:
                out.append((widget, region))
        return out

    async def event(self) -> str:
        """One random event; its description."""
        u = [self.rng.random() for _ in range(6)]
        app, pilot = self.app, self.pilot
        field_ = self._dialog_input()
        if field_ is not None and u[0] < 0.7:
            if u[0] < 0.35:
                text = self.typed[int(u[1] * len(self.typed))]
                if u[2] < 0.5:
                    field_.value = ""
                if text:
                    await pilot.press(*text)
                return f"type {text!r}{' (cleared)' if u[2] < 0.5 else ''}"
            key = "enter" if u[0] < 0.55 else "escape"
            await pilot.press(key)
            return f"dialog {key}"
        if u[0] < 0.45:
            keys = MAIN_KEYS if u[2] < 0.7 else PANE_KEYS
            key = keys[int(u[1] * len(keys))]
            await pilot.press(key)
            return f"key {key}"
        if u[0] < 0.8:
            widgets = self._widgets()
            if not widgets:
                return "click (nothing to click)"
            widget, region = widgets[int(u[1] * len(widgets))]
            x = region.x + int(u[2] * region.width)
            y = region.y + int(u[3] * region.height)
            target, _ = app.get_widget_at(x, y)
            if "quit" in str(getattr(target, "action", "")):  # the footer's `q Quit`
                return f"click {type(target).__name__} at ({x}, {y}) skipped: it quits"
            if u[4] < 0.1:
                await pilot.double_click(None, offset=(x, y))
                how = "double-click"
            else:
                await pilot.click(None, offset=(x, y))
                how = "click"
            return f"{how} {type(widget).__name__}#{widget.id} at ({x}, {y})"
        if u[0] < 0.88:
            width, height = SIZES[int(u[1] * len(SIZES))]
            await pilot.resize_terminal(width, height)
            return f"resize {width}x{height}"
        if u[0] < 0.95:
            await pilot.press("ctrl+p")
            await pilot.pause()
            text = ["3", "step 2", "layer 1", "head", "tensors", "watch", "break", "resid", "why", "x"][int(u[1] * 10)]
            if self._dialog_input() is not None:
                await pilot.press(*text)
                await pilot.pause(0.05)
                await pilot.press("enter" if u[2] < 0.6 else "escape")
            return f"palette {text!r} {'enter' if u[2] < 0.6 else 'escape'}"
        await self.wait_workers()
        return "settle"

    async def wait_workers(self) -> None:
        """Let the live workers finish (a running continue ends at the token limit or a breakpoint)."""
        deadline = time.monotonic() + self.settle
        while time.monotonic() < deadline:
            await self.pilot.pause(0.02)
            if not self.app.busy and not self.app.continuing and not len(self.app.workers):
                return

    def check(self) -> str | None:
        """The first broken invariant, or None."""
        app = self.app
        if app.crash is not None or app._exception is not None:
            error = app.crash or app._exception
            return "uncaught exception: " + "".join(traceback.format_exception(error)).strip()
        if app.return_code is not None or not app.is_running:
            return f"the app ended (return code {app.return_code})"
        reported = sorted(app._reported)
        if len(reported) > self.reported:
            self.reported = len(reported)
            if not any(p.search(app.last_error or "") for p in EXPECTED_REFUSALS):
                return f"error dialog: {app.last_error}"
        screens = [app.screen] + ([app.main_screen] if app.screen is not app.main_screen else [])
        for screen in screens:
            bad = control_characters(screen_strips(screen))
            if bad:
                return f"control characters on {type(screen).__name__}: " + "; ".join(bad[:3])
        if app.screen is app.main_screen and app.n_steps and not app.main_screen.has_class("-loading"):
            line = status_line(app)
            want = [f"step {app.step}/{app.n_steps - 1}", rf"\bL {app.layer}\b", rf"\bH {app.head}\b"]
            missing = [w for w in want[:1] if w not in line] + [w for w in want[1:] if not re.search(w, line)]
            if missing:
                return f"the status bar lacks {missing}: {line.rstrip()!r}"
        return None

    async def run(self, events: int, start_index: int = 0) -> MonkeyFailure | None:
        for index in range(start_index, start_index + events):
            try:
                event = await self.event()
                await self.pilot.pause()
            except Exception as exc:  # noqa: BLE001 - a failure of the driving itself is reported
                event = "?"
                problem = f"the event raised {type(exc).__name__}: {exc}"
                if self.app.crash is not None or self.app._exception is not None:
                    problem = self.check() or problem
                self.log.append(f"{index}: {event}")
                return MonkeyFailure(self.seed, index, event, problem, self.log)
            self.log.append(f"{index}: {event}")
            top = type(self.app.screen).__name__
            self.seen[top] = self.seen.get(top, 0) + 1
            self.seen["runs"] = max(self.seen.get("runs", 1), len(self.app.run_keys))
            problem = self.check()
            if problem is not None:
                return MonkeyFailure(self.seed, index, event, problem, self.log)
        return None


async def _drive(app, seed: int, events: int, size, live: bool, typed) -> Outcome:
    start = time.perf_counter()
    async with app.run_test(size=size) as pilot:
        monkey = Monkey(app, pilot, seed, typed)
        if live:
            await monkey.wait_workers()
        failure = monkey.check()
        failure = MonkeyFailure(seed, -1, "start", failure, []) if failure else await monkey.run(events)
        log, seen = monkey.log, monkey.seen
    if failure is None and app.crash is not None:
        failure = MonkeyFailure(seed, events, "exit", f"crashed on exit: {app.crash!r}", log)
    return Outcome(seed, len(log), time.perf_counter() - start, failure, log, seen)


def run_replay(trace_dir: str, seed: int, events: int, size=(120, 40), typed=()) -> Outcome:
    """The monkey on a replay of `trace_dir` (from a fresh app)."""
    from stepscope.tracer import load_trace
    from stepscope.tui.app import StepscopeApp

    app = StepscopeApp(trace=load_trace(trace_dir))
    return asyncio.run(_drive(app, seed, events, size, False, list(typed) + [trace_dir]))


def run_live(model, tokenizer, seed: int, events: int, size=(120, 40), typed=(), max_new_tokens: int = 8) -> Outcome:
    """The monkey on a live session of `model` (from a fresh app)."""
    from stepscope.tui.app import StepscopeApp

    app = StepscopeApp(session_factory=hostile_factory(model, tokenizer, max_new_tokens))
    return asyncio.run(_drive(app, seed, events, size, True, typed))
