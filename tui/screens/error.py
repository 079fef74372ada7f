"""Error modal: a failure during a live session (model error, out of memory, disk full) shown
as a message; the session and its recorded steps stay usable underneath.

Keys: `Enter` or `Esc` closes it.
"""

from __future__ import annotations

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical, VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Button, Static

from stepscope.tui.text import inert_text


class ErrorScreen(ModalScreen[None]):
    """`title` and `message` are plain text (shown inert, never as markup).

    | key | action |
    |---|---|
    | `Enter` `Esc` | close |
    """

    BINDINGS = [Binding("escape,enter", "close", "Close")]

    def __init__(
        self, title: str, message: str, hint: str = "the session and its recorded steps are still usable", **kwargs
    ) -> None:
        super().__init__(**kwargs)
        self.title_text = title
        self.message = message
        self.hint = hint

    def compose(self) -> ComposeResult:
        with Vertical(id="error-box"):
            yield Static(inert_text(self.title_text, style="bold"), id="error-title")
            with VerticalScroll(id="error-scroll"):
                yield Static(inert_text(self.message, limit=None, newlines=True), id="error-message")
            yield Static(inert_text(f"{self.hint} · Enter/Esc closes", style="dim"))
            yield Button("OK", id="error-ok", variant="error")

    def on_mount(self) -> None:
        self.query_one("#error-ok", Button).focus()

    def on_button_pressed(self, event: Button.Pressed) -> None:
        event.stop()
        self.dismiss(None)

    def action_close(self) -> None:
        self.dismiss(None)
