"""Too-small notice: replaces everything while the terminal is smaller than 80×24.

The app pushes it on resize and pops it as soon as the terminal is large enough again.

Keys: `q` quits.
"""

from __future__ import annotations

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.screen import Screen
from textual.widgets import Static

MIN_WIDTH, MIN_HEIGHT = 80, 24


class TooSmallScreen(Screen[None]):
    """A centred notice with the current and the needed size.

    | key | action |
    |---|---|
    | `q` | quit |
    """

    BINDINGS = [Binding("q", "app.quit", "Quit")]

    def compose(self) -> ComposeResult:
        yield Static(id="too-small-notice")

    def on_mount(self) -> None:
        self._show()

    def on_resize(self) -> None:
        self._show()

    def _show(self) -> None:
        width, height = self.app.size
        text = Text(justify="center")
        text.append("terminal too small\n", style="bold")
        text.append(f"{width}×{height}: stepscope needs at least {MIN_WIDTH}×{MIN_HEIGHT}\n")
        text.append("enlarge the window (q quits)", style="dim")
        self.query_one("#too-small-notice", Static).update(text)
