"""Help screen: every key of the app, by section, built from the bindings themselves.

Keys: `Esc`, `q` or `?` close it; ↑/↓ PageUp/PageDown scroll.
"""

from __future__ import annotations

from collections.abc import Iterable

from rich.console import Group
from rich.table import Table
from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Vertical, VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Static

_KEY_NAMES = {
    "right": "→",
    "left": "←",
    "up": "↑",
    "down": "↓",
    "home": "Home",
    "end": "End",
    "pageup": "PgUp",
    "pagedown": "PgDn",
    "escape": "Esc",
    "tab": "Tab",
    "shift+tab": "Shift+Tab",
    "enter": "Enter",
    "question_mark": "?",
    "slash": "/",
    "backslash": "\\",
    "asterisk": "*",
    "number_sign": "#",
    "colon": ":",
    "plus": "+",
    "minus": "-",
    "equals_sign": "=",
    "full_stop": ".",
    "comma": ",",
    "left_square_bracket": "[",
    "right_square_bracket": "]",
    "less_than_sign": "<",
    "greater_than_sign": ">",
    "space": "Space",
    "delete": "Del",
    "backspace": "Backspace",
    "ctrl+c": "Ctrl+C",
}


def key_display(keys: str) -> str:
    """`"n,right"` -> `"n / →"`."""
    parts = []
    for key in keys.split(","):
        key = key.strip()
        parts.append(_KEY_NAMES.get(key, key.replace("ctrl+", "Ctrl+")))
    return " / ".join(parts)


def binding_rows(bindings: Iterable[BindingType]) -> list[tuple[str, str]]:
    """(keys, description) for each binding that has a description."""
    rows = []
    for b in bindings:
        if isinstance(b, Binding):
            key, desc = b.key, (b.tooltip or b.description)
        else:
            key, desc = b[0], (b[2] if len(b) > 2 else b[1])
        if desc:
            rows.append((key_display(key), desc))
    return rows


class HelpScreen(ModalScreen[None]):
    """Every key, grouped: `sections` is a list of (title, [(keys, what it does), ...]).

    | key | action |
    |---|---|
    | `Esc` `q` `?` | close |
    | `↑` `↓` `PgUp` `PgDn` | scroll |
    """

    BINDINGS = [
        Binding("escape,q,question_mark", "close", "Close help"),
    ]

    def __init__(self, sections: list[tuple[str, list[tuple[str, str]]]], **kwargs) -> None:
        super().__init__(**kwargs)
        self.sections = sections

    def compose(self) -> ComposeResult:
        parts: list = []  # Text titles and Table sections
        for i, (title, rows) in enumerate(self.sections):
            parts.append(Text(("\n" if i else "") + title, style="bold underline"))
            table = Table(box=None, show_header=False, padding=(0, 2, 0, 0), expand=False)
            table.add_column("keys", style="bold", no_wrap=True, min_width=14)
            table.add_column("what", overflow="fold")
            for keys, what in rows:
                table.add_row(Text(keys), Text(what))
            parts.append(table)
        with Vertical(id="help-box"):
            yield Static(Text("stepscope keys  (Esc closes)", style="bold"), id="help-title")
            with VerticalScroll(id="help-scroll"):
                yield Static(Group(*parts), id="help-table")

    def on_mount(self) -> None:
        self.query_one("#help-scroll").focus()

    def action_close(self) -> None:
        self.dismiss(None)
