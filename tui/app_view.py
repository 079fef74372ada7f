"""The app as the screens and command providers read it, for the type checker only: they do not
import the app (it imports them), so they see it through `DebuggerApp`, which declares the state
and actions they use. Nothing creates one; the app is the only implementation."""

from __future__ import annotations

from typing import Any

from textual.app import App

from stepscope.tracer import Trace
from stepscope.tui.state import AppState


class DebuggerApp(App):
    trace: Trace | None
    session: Any  # the live session, None when replaying
    branches: Any  # the live session's runs, None when replaying
    run_traces: dict[str, Trace]
    current_run: str
    state: AppState
    busy: bool
    continuing: bool
    run_keys: list[str]
    n_steps: int
    step: int
    layer: int
    head: int
    main_screen: Any  # the MainScreen

    def move(self, **changes) -> None:
        raise NotImplementedError

    def action_goto(self) -> None:
        raise NotImplementedError
