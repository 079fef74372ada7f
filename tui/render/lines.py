"""Pieces of the text panes' lines: a clickable span, a signed bar, a token of a trace."""

from __future__ import annotations

from rich.style import Style
from rich.text import Text

from stepscope.tui.text import display_token
from stepscope.tui.views.vocab import token_texts

BAR = 12  # cells of the longest bar
POSITIVE, NEGATIVE = "green", "red"


def click(action: str) -> Style:
    """A style that runs the pane's `action` when its text is clicked."""
    return Style(meta={"@click": action})


def bar(value: float, scale: float, width: int = BAR) -> Text:
    """A signed bar: green to the right for a push towards the chosen token, red for against."""
    n = 0 if not scale else min(width, round(abs(value) / scale * width))
    return Text("█" * n + " " * (width - n), style=POSITIVE if value >= 0 else NEGATIVE, end="")


def token(trace, token_id: int) -> Text:
    """Token `token_id` of the trace's vocabulary, made visible (`tui.text.display_token`)."""
    text, special = token_texts(trace)(token_id)
    return display_token(text, special)
