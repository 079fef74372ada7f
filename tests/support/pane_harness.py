"""One pane mounted alone in a minimal App and driven with Pilot (shared by the pane tests)."""

from __future__ import annotations

import asyncio
import os

from textual.app import App

PANES_TCSS = os.path.join(os.path.dirname(__file__), "..", "tui", "widgets", "panes.tcss")


class PaneApp(App):
    """Mounts one pane; collects what it sends up. With `follow_moves` it plays the real app's part:
    a Pane.Moved moves the pane's cursor (clamped to the trace)."""

    CSS_PATH = PANES_TCSS

    def __init__(self, pane, follow_moves: bool = False):
        super().__init__()
        self.pane = pane
        self.follow_moves = follow_moves
        self.moves: list[dict] = []
        self.messages: list = []

    def compose(self):
        yield self.pane

    def on_pane_moved(self, message):
        self.moves.append(message.changes)
        if self.follow_moves:
            self.pane.cursor = self.pane.cursor.moved(**message.changes).clamped(self.pane.trace)

    def on_tensor_inspector_exported(self, message):
        self.messages.append(message)


def drive(pane, script, size=(100, 30), follow_moves: bool = False) -> PaneApp:
    """Run `await script(app, pilot)` with the pane mounted."""
    app = PaneApp(pane, follow_moves)

    async def main():
        async with app.run_test(size=size) as pilot:
            await pilot.pause()
            await script(app, pilot)

    asyncio.run(main())
    return app


def screen_lines(app) -> list[str]:
    """The screen as plain text lines."""
    return [strip.text for strip in app.screen._compositor.render_strips()]
