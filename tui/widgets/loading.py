"""Loading panel: shown while a live session's model loads and runs its prefill.

Shows what is happening (the loader's stage text) and a progress bar; the app stays responsive
(`q` quits, `?` help). The app sets `stage` and `fraction`.

Keys: none.
"""

from __future__ import annotations

from rich.text import Text
from textual.app import ComposeResult
from textual.containers import Vertical
from textual.reactive import reactive
from textual.widgets import ProgressBar, Static


class LoadingPanel(Vertical):
    """Stage text + progress bar; `stage` (str) and `fraction` (0..1, None = unknown) set by the app."""

    stage: reactive[str] = reactive("starting")
    fraction: reactive[float | None] = reactive(None)

    def compose(self) -> ComposeResult:
        yield Static(Text("stepscope: loading the model", style="bold"), id="loading-title")
        yield Static(id="loading-stage")
        yield ProgressBar(total=100, show_eta=False, id="loading-progress")
        yield Static(Text("q quits · ? help", style="dim"), id="loading-hint")

    def validate_fraction(self, value: float | None) -> float | None:
        if value is None:
            return None
        return min(max(float(value), 0.0), 1.0)

    def on_mount(self) -> None:
        self.watch_stage(self.stage)
        self.watch_fraction(self.fraction)

    def watch_stage(self, stage: str) -> None:
        if self.is_mounted:
            self.query_one("#loading-stage", Static).update(Text(stage))

    def watch_fraction(self, fraction: float | None) -> None:
        if not self.is_mounted:
            return
        bar = self.query_one(ProgressBar)
        if fraction is None:
            bar.update(total=None)
        else:
            bar.update(total=100, progress=round(fraction * 100))
