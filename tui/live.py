"""Live-session glue: model work in thread workers, results and errors back to the app.

`LiveWorkers` is mixed into `StepscopeApp`. Every call into the `LiveSession` runs in a
`@work(thread=True, exclusive=True)` worker under one lock, so the UI stays responsive and the
session is never entered twice. A worker's exception becomes an error modal (see
`StepscopeApp.on_worker_state_changed`); the session and its recorded steps stay usable.

    load_session()      the factory (loads the model: slow, reports progress) + the prefill
    compute_next()      one more step at the end of the trace
    continue_live()     steps until EOS, the token limit, a breakpoint or a pause
    save_session(path)  `LiveSession.save(path)`
"""

from __future__ import annotations

import inspect
import threading
from collections.abc import Callable
from typing import Any

from textual import work
from textual.worker import get_current_worker

from tui.breakpoints import BreakpointSet

WORKER_TITLES = {
    "load": "Could not start the live session",
    "step": "Computing the next step failed",
    "continue": "Generation stopped with an error",
    "save": "Could not write the trace",
}


def default_session_factory(progress: Callable[[str, float], None] | None = None):
    """The embedded default model (SmolLM2) on the default prompt "The capital of France is",
    as a plain completion (no chat template), like `stepscope` with no arguments."""
    from tracer.session import GenerationSettings, LiveSession

    return LiveSession.open(None, settings=GenerationSettings(chat=False), progress=progress)


def call_factory(factory: Callable[..., Any], progress: Callable[[str, float], None]):
    """Call a session factory, handing it `progress` when it takes one."""
    try:
        params = inspect.signature(factory).parameters
    except (TypeError, ValueError):
        params = {}
    takes_progress = "progress" in params or any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
    return factory(progress=progress) if takes_progress else factory()


def latest_step_index(session) -> int:
    return len(session.trace.steps) - 1


class LiveWorkers:
    """Mixin for the app: `session`, `_session_lock`, and the workers that drive the session."""

    session = None
    session_factory: Callable[..., Any] | None = None

    def _init_live(self) -> None:
        self._session_lock = threading.Lock()
        self._pause_event = threading.Event()

    # -- workers (run in threads) ----------------------------------------------------------------
    @work(thread=True, exclusive=True, group="session", exit_on_error=False, name="load")
    def load_session(self) -> None:
        def progress(stage: str, fraction: float | None = None) -> None:
            self.call_from_thread(self._on_load_progress, str(stage), fraction)

        progress("loading the model", None)
        session = call_factory(self.session_factory, progress)
        self.call_from_thread(self._on_session_ready, session)
        if len(session.trace.steps) == 0:
            progress("prefill", None)
            with self._session_lock:
                session.step()
        self.call_from_thread(self._on_step_computed, latest_step_index(session), True)

    @work(thread=True, exclusive=True, group="session", exit_on_error=False, name="step")
    def compute_next(self) -> None:
        session = self.session
        with self._session_lock:
            session.step()
        self.call_from_thread(self._on_step_computed, latest_step_index(session), True)

    @work(thread=True, exclusive=True, group="session", exit_on_error=False, name="continue")
    def continue_live(self, breakpoints: BreakpointSet) -> None:
        session = self.session
        worker = get_current_worker()
        reason = ""
        while True:
            if worker.is_cancelled or self._pause_event.is_set():
                reason = "paused"
                break
            if session.finished:
                reason = f"finished ({session.stop_reason})"
                break
            with self._session_lock:
                result = session.step()
            if result is None:
                reason = f"finished ({session.stop_reason})"
                break
            index = latest_step_index(session)
            entry = session.trace.manifest["steps"][index]
            hit = breakpoints.first_hit(entry)
            self.call_from_thread(self._on_step_computed, index, True)
            if hit is not None:
                reason = f"breakpoint at step {index}: {hit.describe()}"
                break
            if session.finished:
                reason = f"finished ({session.stop_reason})"
                break
        self.call_from_thread(self._on_continue_done, reason)

    @work(thread=True, exclusive=True, group="save", exit_on_error=False, name="save")
    def save_session(self, path: str) -> None:
        with self._session_lock:
            written = self.session.save(path)
        self.call_from_thread(self._on_saved, written or path)

    # -- callbacks (run on the UI thread; implemented by the app) -------------------------------
    def _on_load_progress(self, stage: str, fraction: float | None) -> None:  # pragma: no cover
        raise NotImplementedError

    def _on_session_ready(self, session) -> None:  # pragma: no cover
        raise NotImplementedError

    def _on_step_computed(self, index: int, follow: bool) -> None:  # pragma: no cover
        raise NotImplementedError

    def _on_continue_done(self, reason: str) -> None:  # pragma: no cover
        raise NotImplementedError

    def _on_saved(self, path: str) -> None:  # pragma: no cover
        raise NotImplementedError
