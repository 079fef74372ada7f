"""Live-session glue: model work in thread workers, results back to the app as messages.

`LiveWorkers` is mixed into `StepscopeApp`. Every call into the `LiveSession` runs in a
`@work(thread=True, exclusive=True)` worker under one lock, so the UI stays responsive and the
session is never entered twice. The session (and its own internal `Trace`) belongs to the worker
threads; the app renders from ITS OWN `Trace`, built on the UI thread from copies of the manifest
that arrive in messages (`SessionReady`, `StepsReady`): no thread but the UI thread touches the
Trace the views read. A worker's exception becomes an error modal (see
`StepscopeApp.on_worker_state_changed`); the session and its recorded steps stay usable.

    load_session()      the factory (loads the model: slow, reports progress) + the prefill
    compute_next()      one more step at the end of the trace
    continue_live()     steps until EOS, the token limit, a breakpoint or a pause
    save_session(path)  `LiveSession.save(path)`
    apply_settings(ch)  sampler settings / token limit from the next step (`tui.live_settings`)
"""

from __future__ import annotations

import copy
import inspect
import threading
from collections.abc import Callable
from typing import Any

from textual import work
from textual.message import Message
from textual.worker import get_current_worker

from stepscope.tui.breakpoints import BreakpointSet
from stepscope.tui.live_settings import apply_to_session, current_settings

WORKER_TITLES = {
    "load": "Could not start the live session",
    "step": "Computing the next step failed",
    "continue": "Generation stopped with an error",
    "save": "Could not write the trace",
    "settings": "Could not change the settings",
}


def default_session_factory(progress: Callable[[str, float], None] | None = None):
    """The embedded default model (SmolLM2) on the default prompt "The capital of France is",
    as a plain completion (no chat template), like `stepscope` with no arguments."""
    from stepscope.tracer.session import GenerationSettings, LiveSession

    return LiveSession.open(None, settings=GenerationSettings(chat=False), progress=progress)


def call_factory(factory: Callable[..., Any], progress: Callable[[str, float], None]):
    """Call a session factory, handing it `progress` when it takes one."""
    try:
        params = inspect.signature(factory).parameters
    except (TypeError, ValueError):
        params = {}
    takes_progress = "progress" in params or any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
    return factory(progress=progress) if takes_progress else factory()


# -- messages (posted by the workers, handled on the UI thread) -----------------------------------
class LoadProgress(Message):
    """Loading the model: `stage` text and `fraction` done (None: unknown)."""

    def __init__(self, stage: str, fraction: float | None) -> None:
        super().__init__()
        self.stage, self.fraction = stage, fraction


class SessionReady(Message):
    """The session exists: `manifest` is a private copy (no steps yet) for the app's own Trace."""

    def __init__(self, session, path: str, manifest: dict) -> None:
        super().__init__()
        self.session, self.path, self.manifest = session, path, manifest


class StepsReady(Message):
    """Steps completed on disk: copies of their manifest `entries` and chosen `tokens`, and of
    `model` facts the session learned with them (`norm_inputs`; None when nothing changed)."""

    def __init__(self, entries: list[dict], tokens: list[dict], finished: bool, stop_reason: str | None,
                 model: dict | None = None) -> None:
        super().__init__()
        self.entries, self.tokens, self.model = entries, tokens, model
        self.finished, self.stop_reason = finished, stop_reason


class ContinueDone(Message):
    """A continue ended: `reason` (paused, finished (...), breakpoint at step N: ...)."""

    def __init__(self, reason: str) -> None:
        super().__init__()
        self.reason = reason


class Saved(Message):
    """The session was written to `path`."""

    def __init__(self, path: str) -> None:
        super().__init__()
        self.path = path


class SettingsApplied(Message):
    """Sampler settings / token limit changed from the next step: `changes`, the full `settings`
    now, and the session's state (a new limit can end or resume generation)."""

    def __init__(self, changes: dict, settings: dict, finished: bool, stop_reason: str | None) -> None:
        super().__init__()
        self.changes, self.settings = changes, settings
        self.finished, self.stop_reason = finished, stop_reason


class LiveWorkers:
    """Mixin for the app: `session`, `_session_lock`, and the workers that drive the session."""

    session = None
    session_factory: Callable[..., Any] | None = None
    branches = None  # tracer.branch.BranchSet of the live session (tui/branching.py), None without

    def _init_live(self) -> None:
        self._session_lock = threading.Lock()
        self._pause_event = threading.Event()
        self._sent_steps = 0  # steps already handed to the UI (worker side; under the lock)
        self._sent_norm_inputs: dict | None = None  # the model facts already handed with them

    def _post_new_steps(self, session) -> None:
        """(worker, under the lock) Hand copies of the steps written since the last call to the UI."""
        session.writer.flush()  # a background writer: the step files are complete on disk
        manifest = session.writer.manifest
        entries = [copy.deepcopy(e) for e in manifest["steps"][self._sent_steps :]]
        if not entries:
            return
        prompt_len = int(manifest["prompt_len"])
        tokens = [dict(t) for t in manifest["tokens"][prompt_len + self._sent_steps : prompt_len + self._sent_steps + len(entries)]]
        self._sent_steps += len(entries)
        learned = manifest["model"].get("norm_inputs")
        model = {"norm_inputs": copy.deepcopy(learned)} if learned and learned != self._sent_norm_inputs else None
        if model:
            self._sent_norm_inputs = model["norm_inputs"]
        self.post_message(StepsReady(entries, tokens, bool(session.finished), session.stop_reason, model))

    # -- workers (run in threads) ----------------------------------------------------------------
    @work(thread=True, exclusive=True, group="session", exit_on_error=False, name="load")
    def load_session(self) -> None:
        def progress(stage: str, fraction: float | None = None) -> None:
            self.post_message(LoadProgress(str(stage), fraction))

        progress("loading the model", None)
        session = call_factory(self.session_factory, progress)
        from stepscope.tui.branching import make_branch_set

        self.branches = make_branch_set(session)  # before the first step (sliding windows keep what a crop needs)
        with self._session_lock:
            manifest = copy.deepcopy(dict(session.writer.manifest, steps=[], tokens=session.writer.manifest["tokens"][: int(session.writer.manifest["prompt_len"])]))
            self.post_message(SessionReady(session, session.path, manifest))
            if self._sent_steps == 0 and session.writer.steps_written == 0:
                progress("prefill", None)
                session.step()
            self._post_new_steps(session)

    @work(thread=True, exclusive=True, group="session", exit_on_error=False, name="step")
    def compute_next(self) -> None:
        session = self.session
        with self._session_lock:
            session.step()
            self._post_new_steps(session)

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
                index = session.writer.steps_written - 1
                entry = session.writer.manifest["steps"][index] if index >= 0 else {}
                self._post_new_steps(session)
            if result is None and not session.finished:
                reason = "stopped"
                break
            hit = breakpoints.first_hit(entry, session.trace)  # the session's own Trace (worker side)
            if hit is not None:
                reason = f"breakpoint at step {index}: {hit.explain(entry, session.trace)}"
                break
            if session.finished:
                reason = f"finished ({session.stop_reason})"
                break
        self.post_message(ContinueDone(reason))

    @work(thread=True, exclusive=True, group="settings", exit_on_error=False, name="settings")
    def apply_settings(self, changes: dict) -> None:
        """Change the sampler / token limit between two steps (under the lock: after the step being
        computed, before the next one)."""
        session = self.session
        with self._session_lock:
            applied = apply_to_session(session, changes)
            self.post_message(SettingsApplied(applied, current_settings(session.settings), bool(session.finished),
                                              session.stop_reason))

    @work(thread=True, exclusive=True, group="save", exit_on_error=False, name="save")
    def save_session(self, path: str) -> None:
        with self._session_lock:
            written = self.session.save(path)
        self.post_message(Saved(written or path))
