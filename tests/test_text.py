"""Token text display: whitespace visible, control characters escaped, markup inert."""

import io
import re

from rich.console import Console
from rich.text import Text

from tui.text import STYLE_SPECIAL, display_token, escape_for_display, truncate

SGR = re.compile(r"\x1b\[[0-9;]*m")  # rich's own colour codes


def render(renderable, color_system="256") -> str:
    console = Console(file=io.StringIO(), width=80, color_system=color_system, force_terminal=color_system is not None)
    console.print(renderable)
    return console.file.getvalue()


def test_whitespace_markers_are_visible():
    assert escape_for_display("Ġcapital") == "·capital"
    assert escape_for_display("▁Paris") == "·Paris"
    assert escape_for_display(" a b ") == "·a·b·"
    assert escape_for_display("x\ny") == "x↵y"
    assert escape_for_display("\t\r") == "⇥␍"


def test_control_characters_become_visible_escapes():
    assert escape_for_display("\x1b[31m") == "\\x1b[31m"
    assert escape_for_display("\x07") == "\\x07"
    assert escape_for_display("\x00\x7f") == "\\x00\\x7f"
    assert escape_for_display("a\x85b\x9b") == "a\\x85b\\x9b"  # C1 controls, including CSI
    assert escape_for_display("\u202eevil") == "\\u202eevil"  # bidi override
    assert escape_for_display("\u200b") == "\\u200b"  # zero-width space


def test_empty_token_is_visible():
    assert escape_for_display("") == "∅"
    assert display_token("").plain == "∅"


def test_markup_is_never_interpreted():
    t = display_token("[red]x[/red] [bold]y")
    assert isinstance(t, Text)
    assert t.plain == "[red]x[/red]·[bold]y"
    assert all("red" not in str(span.style) and "bold" not in str(span.style) for span in t.spans)
    out = render(t, color_system=None)
    assert "[red]x[/red]·[bold]y" in out


def test_markup_escape_and_bell_token_displays_literally():
    token = "[red]x[/red]\x1b[31m\x07"
    t = display_token(token)
    assert t.plain == "[red]x[/red]\\x1b[31m\\x07"
    plain = render(t, color_system=None)
    assert "[red]x[/red]" in plain and "\\x1b[31m" in plain and "\\x07" in plain
    assert "\x1b" not in plain and "\x07" not in plain
    coloured = render(t, color_system="256")
    visible = SGR.sub("", coloured)  # remove only rich's styling codes
    assert "[red]x[/red]\\x1b[31m\\x07" in visible
    assert "\x1b" not in visible and "\x07" not in visible
    assert "\x1b[31m" not in coloured.replace("\\x1b[31m", "")  # the token's own escape never reaches the terminal


def test_special_tokens_are_styled_distinctly():
    special = display_token("<|im_start|>", special=True)
    normal = display_token("<|im_start|>")
    assert special.plain == normal.plain == "<|im_start|>"
    assert special.style == STYLE_SPECIAL
    assert normal.style != special.style and not normal.spans


def test_escapes_and_whitespace_are_styled_apart_from_text():
    t = display_token(" a\x07")
    styles = {t.plain[s.start : s.end]: str(s.style) for s in t.spans}
    assert styles == {"·": "dim", "\\x07": "bold magenta"}


def test_escape_is_idempotent_and_truncate():
    once = escape_for_display(" \x1b[0m\n")
    assert escape_for_display(once) == once
    assert truncate("abcdef", 4) == "abc…"
    assert truncate("abc", 4) == "abc"
    assert truncate("abc", 0) == ""
