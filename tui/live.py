"""Live-session glue: model work in thread workers, results back to the app as messages.

`LiveWorkers` is mixed into `StepscopeApp`. Every call into a `LiveSession` runs in a
`@work(thread=True, exclusive=True)` worker under the one lock of the app's `LiveLink`, so the UI
stays responsive and the session is never entered twice. A worker gets the session it drives as an
argument, never changes an attribute of the app, and hands its results to the UI thread as
messages holding copies: `SessionReady`, `StepsReady` (copies of the manifest's new entries), ...
The app renders from ITS OWN `Trace`, built on the UI thread from those copies: no thread but the
UI thread touches the Trace the views read. A worker's exception becomes an error modal (see
`StepscopeApp.on_worker_state_changed`); the session and its recorded steps stay usable.

    load_session(factory)        the factory (loads the model: slow, reports progress) + the prefill
    compute_next(session)        one more step at the end of the trace
    continue_live(session, bps)  steps until EOS, the token limit, a breakpoint or a pause
    save_session(session, path)  `LiveSession.save(path)`
    apply_settings(session, ch)  sampler settings / token limit from the next step (`tui.live_settings`)
"""

from __future__ import annotations

import copy
import inspect
import threading
from collections.abc import Callable, Mapping
from typing import Any

from textual import work
from textual.message import Message
from textual.worker import get_current_worker

from stepscope import seam
from stepscope.tui.breakpoints import BreakpointSet
from stepscope.tui.live_settings import apply_to_session, session_settings

WORKER_TITLES = {
    "load": "Could not start the live session",
    "step": "Computing the next step failed",
    "continue": "Generation stopped with an error",
    "save": "Could not write the trace",
    "settings": "Could not change the settings",
    "branch": "Branch failed",
}


def default_session_factory(progress: Callable[[str, float], None] | None = None):
    """The embedded default model (SmolLM2) on the default prompt "The capital of France is",
    as a plain completion (no chat template), like `stepscope` with no arguments."""
    return seam.open_default_session(progress)


def call_factory(factory: Callable[..., Any], progress: Callable[[str, float], None]):
    """Call a session factory, handing it `progress` when it takes one."""
    params: Mapping[str, inspect.Parameter]
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
    """The session exists: `manifest` is a private copy (no steps yet) for the app's own Trace;
    `branches` the BranchSet over it (None where branching is unavailable); `settings` a copy of
    its sampler settings and token limit."""

    def __init__(self, session, branches, path: str, manifest: dict, settings: dict) -> None:
        super().__init__()
        self.session, self.branches, self.path, self.manifest = session, branches, path, manifest
        self.settings = settings


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
    now (a copy), and the session's state (a new limit can end or resume generation)."""

    def __init__(self, changes: dict, settings: dict, finished: bool, stop_reason: str | None) -> None:
        super().__init__()
        self.changes, self.settings = changes, settings
        self.finished, self.stop_reason = finished, stop_reason


class LiveLink:
    """The worker side of the live session: the one `lock` every call into a session takes, the
    `pause` event a running continue checks, and what was already handed to the UI (steps and the
    model facts learned with them). Used under `lock` only (by the workers; by the UI thread when
    it switches runs, while no worker runs)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.pause = threading.Event()
        self.sent_steps = 0
        self.sent_norm_inputs: dict | None = None

    def new_steps(self, session) -> StepsReady | None:
        """(under the lock) Copies of the steps written since the last call, as a message; None when none."""
        session.writer.flush()  # a background writer: the step files are complete on disk
        manifest = session.writer.manifest
        entries = [copy.deepcopy(e) for e in manifest["steps"][self.sent_steps :]]
        if not entries:
            return None
        prompt_len = int(manifest["prompt_len"])
        first = prompt_len + self.sent_steps
        tokens = [dict(t) for t in manifest["tokens"][first : first + len(entries)]]
        self.sent_steps += len(entries)
        learned = manifest["model"].get("norm_inputs")
        model = {"norm_inputs": copy.deepcopy(learned)} if learned and learned != self.sent_norm_inputs else None
        if model:
            self.sent_norm_inputs = model["norm_inputs"]
        return StepsReady(entries, tokens, bool(session.finished), session.stop_reason, model)

    def sent_all(self, session) -> None:
        """(under the lock) Every step `session` has written is in the UI (a run switched to or just made)."""
        self.sent_steps = len(session.writer.manifest["steps"])


class LiveWorkers:
    """Mixin for the app: the workers that drive a live session. They read only `link` (the app's
    `LiveLink`) and their arguments, and post messages."""

    link: LiveLink
    post_message: Callable[[Message], bool]  # the app's (a MessagePump's)

    def _post_new_steps(self, session) -> None:
        """(worker, under the lock) Hand copies of the steps written since the last call to the UI."""
        message = self.link.new_steps(session)
        if message is not None:
            self.post_message(message)

    # -- workers (run in threads) ----------------------------------------------------------------
    @work(thread=True, exclusive=True, group="session", exit_on_error=False, name="load")
    def load_session(self, factory: Callable[..., Any]) -> None:
        def progress(stage: str, fraction: float | None = None) -> None:
            self.post_message(LoadProgress(str(stage), fraction))

        progress("loading the model", None)
        session = call_factory(factory, progress)
        branches = seam.make_branch_set(session)  # before the first step (sliding windows keep what a crop needs)
        with self.link.lock:
            manifest = session.writer.manifest
            manifest = copy.deepcopy(dict(manifest, steps=[], tokens=manifest["tokens"][: int(manifest["prompt_len"])]))
            self.post_message(SessionReady(session, branches, session.path, manifest, session_settings(session)))
            if self.link.sent_steps == 0 and session.writer.steps_written == 0:
                progress("prefill", None)
                session.step()
            self._post_new_steps(session)

    @work(thread=True, exclusive=True, group="session", exit_on_error=False, name="step")
    def compute_next(self, session) -> None:
        with self.link.lock:
            session.step()
            self._post_new_steps(session)

    @work(thread=True, exclusive=True, group="session", exit_on_error=False, name="continue")
    def continue_live(self, session, breakpoints: BreakpointSet) -> None:
        worker = get_current_worker()
        reason = ""
        while True:
            if worker.is_cancelled or self.link.pause.is_set():
                reason = "paused"
                break
            if session.finished:
                reason = f"finished ({session.stop_reason})"
                break
            with self.link.lock:
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
    def apply_settings(self, session, changes: dict) -> None:
        """Change the sampler / token limit between two steps (under the lock: after the step being
        computed, before the next one)."""
        with self.link.lock:
            applied = apply_to_session(session, changes)
            self.post_message(SettingsApplied(applied, session_settings(session), bool(session.finished),
                                              session.stop_reason))

    @work(thread=True, exclusive=True, group="save", exit_on_error=False, name="save")
    def save_session(self, session, path: str) -> None:
        with self.link.lock:
            written = session.save(path)
        self.post_message(Saved(written or path))
