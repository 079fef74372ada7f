"""One pane mounted alone in a minimal App and driven with Pilot (shared by the pane tests)."""

from __future__ import annotations

import asyncio
import os

from textual.app import App

from tests.support.paths import ROOT

PANES_TCSS = os.path.join(ROOT, "tui", "widgets", "panes.tcss")


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


def screen_text(app) -> str:
    """The screen as plain text, trailing spaces stripped."""
    return "\n".join(line.rstrip() for line in screen_lines(app))


def cell_colours(app, y: int) -> list[tuple[str, tuple | None, tuple | None]]:
    """(char, fg rgb, bg rgb) of every cell of screen line y."""
    out = []
    for seg in app.screen._compositor.render_strips()[y]:
        style = seg.style
        fg = tuple(style.color.triplet) if style and style.color and style.color.triplet else None
        bg = tuple(style.bgcolor.triplet) if style and style.bgcolor and style.bgcolor.triplet else None
        out += [(ch, fg, bg) for ch in seg.text]
    return out


def assert_inert(app):
    """No escape or bell character from a trace reached the screen."""
    for line in screen_lines(app):
        assert "\x1b" not in line and "\x07" not in line
