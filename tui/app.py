"""StepscopeApp: the terminal step-through debugger over a recorded or live trace.

    StepscopeApp(trace=load_trace(path))            # `stepscope view DIR`: replay, no torch
    StepscopeApp(session_factory=make_session)      # live: make_session() -> LiveSession (slow;
                                                    #   run in a thread worker, progress shown;
                                                    #   a factory taking `progress=` gets
                                                    #   progress(stage: str, fraction: float|None))
    StepscopeApp()                                  # live on the embedded default model and prompt

The app owns the debugger state and is the only one to change it: the `trace` (only the UI thread
touches it), one immutable `cursor` (`tui.state.Cursor`: step, layer, head, selected attention
cell; clamped by `validate_cursor`, pushed to the visible views by `watch_cursor`), one immutable
`state` (`tui.state.AppState`: replay or live, idle / busy / continuing, the status note, the live
session's end), the breakpoints, and the live runs (`session`, `branches`, `run_traces`,
`current_run`, `live_settings`, and the workers' `link`). Views ask for a move with `Pane.Moved`;
the main screen asks for the rest with its messages (`MainScreen.OpenTrace`, `SwitchRun`,
`MakeBranch`, `PauseRequested`); model work runs in thread workers (`tui.live`,
`tui.branching`) that post messages with copies. Their errors open an error modal and leave the
session usable. While the user reads, the caches of the neighbouring steps are warmed
(`_schedule_prefetch`).

Keys: see `tui.screens.main` (the table there) or press `?` in the app.
"""

from __future__ import annotations

import datetime as _dt
import gc
import os
from collections.abc import Callable
from functools import partial
from typing import Any

from rich.text import Text
from textual import events
from textual.app import App
from textual.binding import Binding
from textual.notifications import SeverityLevel
from textual.reactive import var
from textual.worker import Worker, WorkerState

from stepscope.tracer.inert import inert
from stepscope.tracer.reader import Trace
from stepscope.tracer.trace_format import TraceError
from stepscope.tui.branching import BranchMade, branch_worker
from stepscope.tui.breakpoint_scan import BreakpointScanDone, start_scan
from stepscope.tui.breakpoints import SYNTAX_HELP, BreakpointSet
from stepscope.tui.commands import PROVIDERS
from stepscope.tui.live import (
    WORKER_TITLES,
    ContinueDone,
    LiveLink,
    LiveWorkers,
    LoadProgress,
    Saved,
    SessionReady,
    SettingsApplied,
    StepsReady,
    default_session_factory,
)
from stepscope.tui.live_settings import SettingsError, parse_settings, session_settings, settings_text
from stepscope.tui.render.branches import effect_lines
from stepscope.tui.screens.breakpoints import BreakpointsScreen
from stepscope.tui.screens.error import ErrorScreen
from stepscope.tui.screens.help import HelpScreen, binding_rows
from stepscope.tui.screens.main import PANES, MainScreen
from stepscope.tui.screens.prompt import GotoScreen, PromptScreen
from stepscope.tui.screens.too_small import MIN_HEIGHT, MIN_WIDTH, TooSmallScreen
from stepscope.tui.state import Activity, AppState, Cursor
from stepscope.tui.widgets.heads import HeadsList
from stepscope.tui.widgets.layers import LayersList
from stepscope.tui.widgets.tensor_browser import TensorBrowser
from stepscope.tui.widgets.tensor_inspector import TensorInspector
from stepscope.tui.widgets.token_strip import LEGEND as TOKEN_STRIP_LEGEND
from stepscope.tui.widgets.watch import WATCH_HINT, WatchPane

IDLE, BUSY, CONTINUING = Activity.IDLE, Activity.BUSY, Activity.CONTINUING

_HERE = os.path.dirname(os.path.abspath(__file__))


class StepscopeApp(LiveWorkers, App[None]):
    """The stepscope debugger. Give it a `trace` (replay), a `session_factory` (live), or neither
    (live on the default model)."""

    CSS_PATH = [os.path.join(_HERE, "app.tcss"), os.path.join(_HERE, "widgets", "panes.tcss")]
    TITLE = "stepscope"
    ENABLE_COMMAND_PALETTE = True
    COMMANDS = App.COMMANDS | set(PROVIDERS)
    BINDINGS = [Binding("ctrl+c", "interrupt", "Quit", show=False, priority=True, tooltip="Quit (exit status 130)"),
                Binding("ctrl+p", "command_palette", "Palette", show=False, priority=True,
                        tooltip="Command palette: go to a step (number or token text), layer, head, tensor, pane; "
                                "add a breakpoint or a watch")]

    # Textual's palette commands that would hide the header (one widget filling the screen) are left out:
    # the header always shows step, layer and head.
    HIDDEN_SYSTEM_COMMANDS = frozenset({"Maximize", "Minimize"})

    def get_system_commands(self, screen):
        """Textual's system commands less those that hide the header."""
        for command in super().get_system_commands(screen):
            if command.title not in self.HIDDEN_SYSTEM_COMMANDS:
                yield command

    # `var`: state, not visuals (a repainting reactive on the app would redraw the whole screen)
    cursor: var[Cursor] = var(Cursor, init=False)
    """Where the user looks: step (0 = prefill), layer, head, selected attention cell."""

    def __init__(
        self,
        trace=None,
        session_factory: Callable[..., Any] | None = None,
        *,
        breakpoints: BreakpointSet | None = None,
        **kwargs,
    ) -> None:
        if trace is not None and session_factory is not None:
            raise ValueError("give StepscopeApp a trace or a session_factory, not both")
        super().__init__(**kwargs)
        self.trace = trace
        self.session_factory = session_factory if trace is None else None
        if trace is None and session_factory is None:
            self.session_factory = default_session_factory
        self.state = AppState(source="replay" if trace is not None else "live")
        """What the debugger is doing (replaced, never changed in place, by the app only)."""
        self.breakpoints = breakpoints if breakpoints is not None else BreakpointSet()
        self.last_error: str | None = None
        self.load_progress: tuple[str, float | None] = ("starting", None)
        # the live runs (UI thread): the current run's session, the BranchSet over the runs, the UI
        # Trace of each run once there is a branch ("" the original), the current run's key and a
        # copy of its sampler settings; `link`: what the workers share (lock, pause, steps sent)
        self.session: Any = None  # a LiveSession (the recording side, reached through the seam)
        self.branches: Any = None  # its BranchSet
        self.run_traces: dict[str, Trace] = {}
        self.current_run = ""
        self.live_settings: dict = {}
        self.link = LiveLink()
        self._live_worker: Worker | None = None  # the latest session worker (load, step, continue)
        self.main_screen = MainScreen()
        self._reported: set[str] = set()
        self.crash: BaseException | None = None
        """The exception that ended the app, if one did (the CLI then exits 1)."""
        self.load_failure: BaseException | None = None
        """Why the model did not load, when closing that error ended the app (the CLI prints it)."""

    # -- lifecycle ------------------------------------------------------------------------------
    def get_default_screen(self) -> MainScreen:
        return self.main_screen

    def on_mount(self) -> None:
        if self.trace is None:
            self._set_busy(True, "loading the model")
            self._live_worker = self.load_session(self.session_factory)
        self._check_size(self.size.width, self.size.height)
        self.call_after_refresh(gc.freeze)

    # gc.freeze(): the long-lived objects of startup (Textual, the manifest, a loaded model and
    # tokenizer) leave the collector's view, so a full collection takes a few ms instead of
    # 50-70 ms in the middle of a keypress.

    def on_resize(self, event: events.Resize) -> None:
        self._check_size(event.size.width, event.size.height)

    def _check_size(self, width: int, height: int) -> None:
        small = width < MIN_WIDTH or height < MIN_HEIGHT
        showing = isinstance(self.screen, TooSmallScreen)
        if small and not showing:
            self.push_screen(TooSmallScreen())
        elif not small and showing:
            self.pop_screen()

    def on_unmount(self) -> None:
        self.link.pause.set()
        timer = getattr(self, "_prefetch_timer", None)
        if timer is not None:
            timer.stop()
        self._prefetch_jobs: list = []
        session = self.session
        if session is not None:
            locked = self.link.lock.acquire(timeout=10)  # let a step being computed finish
            try:
                session.close()
            except Exception:  # noqa: BLE001 - closing must not hide the real exit
                pass
            finally:
                if locked:
                    self.link.lock.release()

    PASS_WHILE_CONTINUING = frozenset({"w", "q", "ctrl+c"})
    """Keys that pause a running continue AND do their own work (write, quit)."""

    async def on_event(self, event: events.Event) -> None:
        # while `c` runs, any key pauses (and, except write and quit, does nothing else)
        if isinstance(event, events.Key) and not event.is_forwarded and self.continuing:
            self.pause()
            if event.key not in self.PASS_WHILE_CONTINUING:
                return
        await super().on_event(event)

    # -- state ----------------------------------------------------------------------------------
    @property
    def busy(self) -> bool:
        """A worker computes, or `c` runs."""
        return self.state.busy

    @property
    def continuing(self) -> bool:
        """`c` runs: any key pauses it."""
        return self.state.continuing

    @property
    def run_keys(self) -> list[str]:
        """The live runs: "" (the original), then each branch, in the order they were made."""
        return list(self.run_traces) or [""]

    @property
    def n_steps(self) -> int:
        return len(self.trace.steps) if self.trace is not None else 0

    @property
    def step(self) -> int:
        return self.cursor.step

    @property
    def layer(self) -> int:
        return self.cursor.layer

    @property
    def head(self) -> int:
        return self.cursor.head

    def move(self, **changes) -> None:
        """Move the cursor (clamped to the trace; an unreadable step is refused with a modal)."""
        self.cursor = self.cursor.moved(**changes)

    def validate_cursor(self, value: Cursor) -> Cursor:
        target = value.clamped(self.trace)
        if self.n_steps and target.step != self.cursor.step:
            problem = self._unreadable(target.step)
            if problem is not None:  # stay where we are; say why, once, in a modal
                self._stop_continuing()
                self.call_later(self._report_unreadable, target.step, problem)
                return target.moved(step=self.cursor.step)
        return target

    def _unreadable(self, index: int) -> str | None:
        """Why step `index` cannot be shown (a corrupted or vanished step file), or None."""
        try:
            _ = self.trace.steps[index].names  # reads (and caches) the file's header only
        except TraceError as exc:
            return str(exc)
        return None

    def _report_unreadable(self, index: int, problem: str) -> None:
        self.report_error(f"Step {index} cannot be read", problem, hint="the other steps of the trace are still usable")

    def watch_cursor(self, old: Cursor, new: Cursor) -> None:
        if not self.busy and self.state.note:  # a note about where we were (end of trace, a breakpoint)
            self._set_state("")
        self._sync()

    def _sync(self) -> None:
        if self.main_screen.is_mounted:
            self.main_screen.sync()
            self._schedule_prefetch()

    # -- prefetch: while the user reads, warm the caches of the neighbouring steps -------------
    PREFETCH_DELAY = 0.08
    """Seconds of quiet after a redraw before the neighbours are prepared (a held key never waits)."""

    def _schedule_prefetch(self) -> None:
        timer = getattr(self, "_prefetch_timer", None)
        if timer is not None:
            timer.stop()
        self._prefetch_jobs = []
        self._prefetch_timer = self.set_timer(self.PREFETCH_DELAY, self._start_prefetch)

    def _start_prefetch(self) -> None:
        if self.trace is None or not self.main_screen.is_mounted or self._exit:
            return
        try:
            jobs = []
            for index in (self.step + 1, self.step - 1):
                jobs += self.main_screen.prefetch_jobs(index)
            jobs += self.main_screen.hidden_pane_jobs(self.step)
        except Exception:  # noqa: BLE001 - optional work (e.g. the screen is being torn down)
            return
        self._prefetch_jobs = jobs
        self._run_prefetch_job()

    def _run_prefetch_job(self) -> None:
        """One job per turn of the event loop, so a key pressed meanwhile waits for one job at most."""
        if not self._prefetch_jobs or self._exit:
            return
        job = self._prefetch_jobs.pop(0)
        try:
            job()
        except Exception:  # noqa: BLE001 - a prefetch failure shows up when the step is shown
            self._prefetch_jobs.clear()
            return
        if self._prefetch_jobs:
            self.call_later(self._run_prefetch_job)

    def _update(self, **changes) -> None:
        """Replace the app state with `changes` applied and show its note and activity."""
        self.state = self.state.with_(**changes)
        if self.main_screen.is_mounted:
            self.main_screen.set_state(self.state.note, self.state.busy)

    def _set_state(self, text: str) -> None:
        self._update(note=text)

    def _set_busy(self, busy: bool, text: str = "") -> None:
        self._update(activity=BUSY if busy else IDLE, note=text)

    def _start_continuing(self, text: str) -> None:
        self.link.pause.clear()
        self._update(activity=CONTINUING, note=text)

    def _stop_continuing(self) -> None:
        """A continue stops being interruptible by any key (its worker may still finish its step)."""
        if self.state.continuing:
            self.state = self.state.with_(activity=BUSY)

    @property
    def at_end(self) -> bool:
        return self.step >= self.n_steps - 1

    @property
    def can_grow(self) -> bool:
        """A live session that has not finished can compute more steps."""
        return self.session is not None and not self.state.finished

    # -- stepping actions -------------------------------------------------------------------------
    def action_next_step(self) -> None:
        if self.trace is None:
            return
        if not self.at_end:
            self.move(step=self.step + 1)
            self._set_state("")
        elif self.busy:
            self.notify("busy: the next step is being computed", timeout=2)
        elif self.can_grow:
            self._set_busy(True, f"computing step {self.n_steps}…")
            self._live_worker = self.compute_next(self.session)
        else:
            self._set_state(self._end_text())

    def action_prev_step(self) -> None:
        if self.trace is not None:
            self.move(step=self.step - 1)
            self._set_state("" if not self.busy else self._busy_text())

    def action_first_step(self) -> None:
        self.move(step=0)

    def action_last_step(self) -> None:
        self.move(step=self.n_steps - 1)

    def action_move_layer(self, delta: int) -> None:
        self.move(layer=self.layer + delta)

    def action_move_head(self, delta: int) -> None:
        self.move(head=self.head + delta)

    def _end_text(self) -> str:
        if self.session is not None:
            reason = self.state.stop_reason or ("finished" if self.state.finished else "")
            return f"end of generation ({reason})" if reason else "end of generation"
        reason = (self.trace.manifest.get("stop_reason") if self.trace is not None else None) or ""
        return f"end of trace ({reason})" if reason else "end of trace"

    def _busy_text(self) -> str:
        return f"computing step {self.n_steps}…" if self.busy else ""

    # -- continue -------------------------------------------------------------------------------
    def action_continue_run(self) -> None:
        if self.trace is None or self.continuing:
            return
        if self.busy:
            self.notify("busy: wait for the current step", timeout=2)
            return
        if any(bp.reads_arrays for bp in self.breakpoints):  # step files to read: in a worker
            self._start_continuing("looking for a breakpoint… (any key stops)")  # any key stops the scan
            start_scan(self, BreakpointSet(list(self.breakpoints)), self.step + 1, self.link.pause)
            return
        steps = self.trace.manifest["steps"]
        hit = self.breakpoints.scan(steps, start=self.step + 1, trace=self.trace)
        if hit is None:
            self._continue_from(None, "")
        else:
            self._continue_from(hit[0], hit[1].explain(steps[hit[0]], self.trace))

    def on_breakpoint_scan_done(self, message: BreakpointScanDone) -> None:
        self.link.pause.clear()
        self._set_busy(False, "")
        if message.stopped:
            self._set_state("stopped looking for a breakpoint")
        else:
            self._continue_from(message.index, message.text)

    def _continue_from(self, index: int | None, text: str) -> None:
        """After the recorded steps were scanned: stop at the breakpoint at `index`, else go to the
        end and, live, go on generating."""
        if index is not None:
            self.move(step=index)
            self._set_state(f"breakpoint at step {index}: {text}")
            return
        self.move(step=self.n_steps - 1)
        if not self.can_grow:
            self._set_state(self._end_text())
            return
        self._start_continuing("continuing… (any key pauses)")
        self._live_worker = self.continue_live(self.session, BreakpointSet(list(self.breakpoints)))

    def pause(self) -> None:
        """Stop a running continue after the step being computed."""
        if self.continuing:
            self.link.pause.set()
            self._set_state("pausing after this step…")

    # -- worker callbacks (UI thread) ------------------------------------------------------------
    def on_load_progress(self, message: LoadProgress) -> None:
        self.load_progress = (message.stage, message.fraction)
        if self.main_screen.is_mounted:
            self.main_screen.set_progress(message.stage, message.fraction)
        self._set_state(message.stage)

    def on_session_ready(self, message: SessionReady) -> None:
        self.session, self.branches, self.live_settings = message.session, message.branches, message.settings
        self.trace = Trace(message.path, message.manifest)  # the UI's own Trace: only this thread touches it
        self.state = self.state.with_(source="live")
        self._sync()
        gc.freeze()  # the model and tokenizer are here to stay

    def on_steps_ready(self, message: StepsReady) -> None:
        self.trace.add_steps(message.entries, message.tokens, message.model)
        self.trace.manifest.update(finished=message.finished, stop_reason=message.stop_reason)
        self.state = self.state.with_(finished=message.finished, stop_reason=message.stop_reason)
        self.move(step=self.n_steps - 1)  # follow the newest step
        self._sync()
        if not self.continuing:
            self._set_busy(False, self._end_text() if self.state.finished else "")

    def on_continue_done(self, message: ContinueDone) -> None:
        self.link.pause.clear()
        self._set_busy(False, message.reason)

    def on_saved(self, message: Saved) -> None:
        self.notify(inert(f"trace written to {message.path}"), timeout=4, markup=False)
        self._set_state(f"written to {message.path}")

    def on_worker_state_changed(self, event: Worker.StateChanged) -> None:
        worker = event.worker
        if worker.name == "branch":
            if event.state == WorkerState.ERROR:
                self._set_busy(False, "branch failed")
                self.report_error(WORKER_TITLES["branch"], worker.error or "unknown error", hint="the original run is still usable")
            return
        if event.state == WorkerState.ERROR:
            error = worker.error
            title = WORKER_TITLES.get(worker.name, "Error")
            if worker is self._live_worker:
                self.link.pause.clear()
                self._set_busy(False, title.lower())
            if worker.name == "load" and self.session is None:  # nothing to debug: closing the dialog quits
                self.report_error(title, error if error is not None else "unknown error",
                                  hint="no model is loaded: closing this quits", on_close=partial(self._load_failed, error))
                return
            self.report_error(title, error if error is not None else "unknown error",
                              hint="the session and its recorded steps are still usable")
        elif event.state == WorkerState.CANCELLED and worker is self._live_worker:
            # (starting an exclusive worker also "cancels" the previous one when it has finished
            # but not yet reported: only the current worker's cancellation changes the state)
            self._set_busy(False, "paused")

    # -- exports (tensor inspector and browser): a notification, inert --------------------------------
    def on_tensor_inspector_exported(self, message: TensorInspector.Exported) -> None:
        self.notify(inert(f"exported {message.name} → {message.path}"), timeout=4, markup=False)

    def on_tensor_browser_exported(self, message: TensorBrowser.Exported) -> None:
        self.notify(inert(f"exported {message.name} → {message.path}"), timeout=4, markup=False)

    def on_tensor_inspector_export_failed(self, message: TensorInspector.ExportFailed) -> None:
        self.notify(inert(f"export of {message.name} failed: {message.error}"), severity="error", timeout=6,
                    markup=False)

    # -- errors: inside the debugger a dialog, outside it one line and a non-zero exit -----------
    MAX_REPORTED_ERRORS = 20
    """Past this many distinct errors in one session, the next one ends the app (exit 1)."""

    def notify(self, message: object, *, title: str = "", severity: SeverityLevel = "information",
               timeout: float | None = None, markup: bool = False) -> None:
        """Every notification is a plain inert string, never markup: a rich `Text` gives its plain text,
        anything else its `str`; control and invisible characters are escaped visibly (`inert`)."""
        plain = message.plain if isinstance(message, Text) else str(message)
        super().notify(inert(plain), title=inert(title), severity=severity, timeout=timeout, markup=False)

    def report_error(self, title: str, error: BaseException | str, hint: str = "", on_close=None) -> None:
        """Show an error dialog (once per distinct message); the debugger stays usable. `on_close`
        runs when the dialog closes."""
        message = error if isinstance(error, str) else f"{type(error).__name__}: {error}"
        message = inert(message)
        if message in self._reported:
            return
        self._reported.add(message)
        self.last_error = message
        if len(self._reported) > self.MAX_REPORTED_ERRORS:
            self.crash = error if isinstance(error, BaseException) else RuntimeError(message)
            self.exit(return_code=1)
            return
        self._stop_continuing()
        self.push_screen(ErrorScreen(title, message, hint=hint or "the rest of the debugger is still usable"),
                         (lambda _: on_close()) if on_close is not None else None)

    def _load_failed(self, error: BaseException | None) -> None:
        """The model did not load and its dialog closed: the app ends (exit 2 for bad input, else 1)."""
        self.load_failure = error if error is not None else RuntimeError("the model did not load")
        self.exit(return_code=1)

    def action_interrupt(self) -> None:
        """Ctrl-C: quit with exit status 130, like an interrupted command."""
        self.exit(return_code=130)

    async def _dispatch_action(self, namespace, action_name: str, params) -> bool:
        try:
            return await super()._dispatch_action(namespace, action_name, params)
        except Exception as exc:  # noqa: BLE001 - a failing key: the dialog, the debugger goes on
            self.report_error(f"{action_name.replace('_', ' ')} failed", exc)
            return True

    def _fatal_error(self) -> None:
        """An exception escaped the debugger: the app ends with code 1 and `crash` set; the CLI
        prints one line (a traceback with STEPSCOPE_DEBUG)."""
        self.crash = self._exception
        if os.environ.get("STEPSCOPE_DEBUG") or self._exception is None:
            super()._fatal_error()
            return
        self.bell()
        self._close_messages_no_wait()

    # -- screens ------------------------------------------------------------------------------
    def action_goto(self) -> None:
        if not self.n_steps:
            return

        def done(value: str | None) -> None:
            if value is not None:
                index = int(value)
                self.move(step=index if index >= 0 else self.n_steps + index)

        self.push_screen(GotoScreen(self.n_steps, self.step), done)

    def action_breakpoints(self) -> None:
        self.push_screen(BreakpointsScreen(self.breakpoints))

    def action_add_watch(self, text: str = "") -> None:
        """Watch an expression: its value and a sparkline over all steps in the sidebar."""
        if self.trace is None:
            return
        self.push_screen(PromptScreen("Watch an expression", value=text, placeholder='p(" Paris")',
                                      hint=WATCH_HINT, check=self.main_screen.add_watch))

    def action_live_settings(self) -> None:
        """Change the sampler settings and the token limit of a live session (from the next step)."""
        if self.session is None:
            self.notify("replay: sampler settings can be changed in a live session", timeout=3)
            return
        current = dict(self.live_settings)  # the copy the session's last message carried

        def check(text: str) -> str | None:
            try:
                parse_settings(text, current)
            except SettingsError as exc:
                return str(exc)
            return None

        def done(value: str | None) -> None:
            if value is not None:
                changes = parse_settings(value, current)
                if changes:
                    self.apply_settings(self.session, changes)

        self.push_screen(PromptScreen(
            "Sampler settings and token limit (from the next step)", value=settings_text(current),
            hint="temperature top_k top_p min_p seed sample=on|off max_new_tokens · Enter applies · Esc cancels",
            check=check), done)

    def on_settings_applied(self, message: SettingsApplied) -> None:
        self.live_settings = message.settings
        self.state = self.state.with_(finished=message.finished, stop_reason=message.stop_reason)
        if self.trace is not None:
            self.trace.manifest.update(finished=message.finished, stop_reason=message.stop_reason)
        if message.changes:
            text = f"from step {self.n_steps}: {settings_text(message.changes)}"
            self.notify(inert(text), timeout=3, markup=False)
            if not self.busy:
                self._set_state(text)

    def action_help(self) -> None:
        self.push_screen(HelpScreen(self.help_sections()))

    def help_sections(self) -> list[tuple[str, list[tuple[str, str]]]]:
        """Every key: the main screen's, then each pane's own (when focused), then the dialogs'."""
        sections = [("Debugger", binding_rows(MainScreen.BINDINGS) + binding_rows(self.BINDINGS)),
                    ("Mouse", [("click a layer / head row", "select that layer / head"),
                               ("click a cell of the Heads grid", "select its layer and head"),
                               ("click a tab or a footer key", "show the pane / run the key"),
                               ("click a token / an Attention cell", "select that query row / cell"),
                               ("click a candidate", "pick it: Why explains against it, F (live) forces it"),
                               ("Why: click a layer / head / rival", "select the layer / open the head's pattern / compare with it"),
                               ("What if: click a knob button", "change that setting (t[−] T[+] …)"),
                               ("Compare: click a token / layer row", "go to that step / select the layer")])]
        for pane_id, label, _ in PANES:
            pane = self.main_screen.pane(pane_id) if self.main_screen.is_mounted else None
            rows: list[tuple[str, str]] = []
            seen: set[type] = set()
            for widget in pane.walk_children(with_self=True) if pane is not None else []:
                if type(widget) in seen or type(widget).__module__.startswith("textual."):
                    continue
                seen.add(type(widget))
                rows += [r for r in binding_rows(type(widget).BINDINGS) if r not in rows]
            if rows:
                sections.append((f"{label} pane (Tab to focus it)", rows))
        sections.append(("Breakpoints screen (b)", [
            ("Enter", f"add the breakpoint typed: {SYNTAX_HELP}"),
            ("Tab", "move between the field and the list"),
            ("Del / d / x", "remove the highlighted breakpoint"),
            ("Esc", "close"),
        ]))
        sections.append(("Watch pane (sidebar; = adds)", binding_rows(WatchPane.BINDINGS)))
        sections.append(("Tensor list filter (/)", [("n / N", "next / previous tensor of the filter (wraps)"),
                                                     ("Esc", "clear the filter")]))
        sections.append(("Dialogs", [("Enter", "accept"), ("Esc", "cancel / close")]))
        sections.append(("What the numbers are", [
            ("layers list", LayersList.LEGEND),
            ("heads list", HeadsList.LEGEND),
            ("status bar", "step i/N: step i of 0..N (0 = prefill) · chose: the token, its rank by logit (1 = top), "
                           "its final p · L l (0–n) H h (0–m): the selected layer and head and their ranges · "
                           "kv: the KV head the query head reads"),
            ("token strip", TOKEN_STRIP_LEGEND),
        ]))
        return sections

    def action_write(self) -> None:
        if self.session is None:
            if self.trace is not None:
                self.notify(inert(f"replay: this trace is already on disk at {self.trace.path}"), timeout=4,
                            markup=False)
            else:
                self.notify("no live session yet: nothing to write", timeout=4)
            return
        stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
        default = os.path.join(os.getcwd(), f"stepscope-trace-{stamp}")

        def check(text: str) -> str | None:
            if not text:
                return "a directory is needed"
            path = os.path.abspath(os.path.expanduser(text))
            if os.path.exists(path) and not os.path.isdir(path):
                return f"{path} is a file"
            if os.path.isdir(path) and os.listdir(path) and not os.path.exists(os.path.join(path, "manifest.json")):
                return f"{path} is not empty and not a trace directory"
            return None

        def done(value: str | None) -> None:
            if value:
                path = os.path.abspath(os.path.expanduser(value))
                self._set_state(f"writing {path}…")
                root = self.branches.sessions[""] if self.branches is not None else self.session
                self.save_session(root, path)  # the whole session: the original and every branch

        self.push_screen(
            PromptScreen("Write the live session to a trace directory", value=default,
                         hint="Enter writes every run (steps so far) · Esc cancels", check=check),
            done,
        )

    # -- runs and branches: what the main screen asks for -------------------------------------------
    def _show_trace(self, trace) -> None:
        """The views show `trace` (another run), the cursor clamped to it."""
        self.trace = trace
        self.move(step=self.step)
        self._sync()

    def on_main_screen_open_trace(self, message: MainScreen.OpenTrace) -> None:
        self._show_trace(message.trace)

    def on_main_screen_switch_run(self, message: MainScreen.SwitchRun) -> None:
        """(no worker runs: the screen checked) Make live run `key` current."""
        with self.link.lock:
            session = self.branches.switch(message.key)
            self.link.sent_all(session)
            settings, finished, stop_reason = session_settings(session), bool(session.finished), session.stop_reason
        self.session, self.current_run, self.live_settings = session, message.key, settings
        self.state = self.state.with_(finished=finished, stop_reason=stop_reason)
        self._show_trace(self.run_traces[message.key])
        self._set_state(message.note)

    def on_main_screen_make_branch(self, message: MainScreen.MakeBranch) -> None:
        self._set_busy(True, f"branching at step {message.step}…")
        self.run_worker(partial(branch_worker, self.link, self.branches, message.step, message.choice, self.post_message),
                        thread=True, group="branch", name="branch", exit_on_error=False)

    def on_branch_made(self, message: BranchMade) -> None:
        """The new branch becomes the current run: its own Trace, the cursor at the forced step."""
        parent = self.trace
        self.run_traces.setdefault("", parent)  # the original run's Trace, kept for switching back
        trace = self.run_traces[message.name] = Trace(message.path, message.manifest)
        self.session, self.current_run, self.live_settings = message.session, message.name, message.settings
        self.state = self.state.with_(finished=message.finished, stop_reason=message.stop_reason)
        self.trace = trace
        self.move(step=message.step)
        self._sync()
        self.main_screen.compare_with(parent, show=False)
        effect = effect_lines(trace, parent, message.step)
        self._set_busy(False, (effect[0].plain if effect else f"branch {message.name} at step {message.step}")
                       + " · n / c continue · B switches runs · 0 compares")

    def on_main_screen_pause_requested(self, message: MainScreen.PauseRequested) -> None:
        self.pause()
