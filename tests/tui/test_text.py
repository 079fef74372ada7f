"""Token text display: whitespace visible, control characters escaped, markup inert."""

import io
import re

from rich.console import Console
from rich.text import Text

from stepscope.tui.text import STYLE_SPECIAL, display_token, escape_for_display, truncate

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


# -- odd whitespace, partial UTF-8 bytes, non-characters, cell widths ----------------------------

from rich.cells import cell_len  # noqa: E402

from stepscope.tui.text import fit, merge_partial, piece_bytes, token_text  # noqa: E402


def test_unicode_spaces_and_format_characters_are_visible():
    assert escape_for_display("\u00a0Paris") == "\\u00a0Paris"  # no-break space (SmolLM2 id 15442)
    assert escape_for_display("\u2009") == "\\u2009"  # thin space
    assert escape_for_display("\u3000") == "\\u3000"  # ideographic space
    assert escape_for_display("\u2060\u00ad") == "\\u2060\\u00ad"  # word joiner, soft hyphen
    for text in ("\u00a0", "\u200b", "\u2009", "\u3000", "\u2028"):
        assert display_token(text).plain.strip(), repr(text)  # never blank


def test_non_characters_and_private_use_are_escaped():
    assert escape_for_display("\ufffe\uffff") == "\\ufffe\\uffff"
    assert escape_for_display("\U0010ffff") == "\\U0010ffff"
    assert escape_for_display("\ue000") == "\\ue000"
    assert escape_for_display("\U000f0000") == "\\U000f0000"
    assert escape_for_display("\ufdd0") == "\\ufdd0"
    assert escape_for_display("\ufffd中🙂é") == "\ufffd中🙂é"  # real characters stay themselves


def test_leading_combining_mark_gets_a_base():
    assert escape_for_display("\u0301") == "◌\u0301"
    assert cell_len(escape_for_display("\u0301")) == 1


def test_byte_pieces_decode_to_their_bytes():
    assert piece_bytes("<0xC2>") == b"\xc2"
    assert piece_bytes("<0xE4><0xB8>") == b"\xe4\xb8"
    assert piece_bytes("ĠÃ") == b" \xc3"  # GPT-2 byte-level alphabet
    assert piece_bytes("Âł") == b"\xc2\xa0"  # the no-break space token
    assert piece_bytes("▁Paris") is None


def test_partial_byte_tokens_show_their_bytes_not_replacement_chars():
    a, b = token_text("\ufffd", "<0xC2>"), token_text("\ufffd", "<0xBD>")
    assert escape_for_display(a) == "<0xC2>" and escape_for_display(b) == "<0xBD>"
    assert escape_for_display(a) != escape_for_display(b)  # ids 173 / 10813 looked identical
    assert escape_for_display(token_text("\ufffd", "ĠÃ")) == "·<0xC3>"
    assert token_text("\ufffd", None) == "\ufffd"  # nothing known: keep the replacement character
    assert token_text("\ufffd", "ï¿½") == "\ufffd"  # a genuine U+FFFD token stays itself
    assert token_text("Paris", "Paris") == "Paris"
    assert "bold yellow" in {str(s.style) for s in display_token(a).spans}


def test_partial_sequences_merge_into_their_character():
    half = [token_text("\ufffd", "<0xC2>"), token_text("\ufffd", "<0xBD>")]  # "½"
    assert merge_partial(["a", *half, "b"]) == [(0, 1, "a"), (1, 3, "½"), (3, 4, "b")]
    emoji = [token_text("\ufffd", f"<0x{b:02X}>") for b in "🙂".encode()]
    assert merge_partial(emoji) == [(0, 4, "🙂")]
    assert merge_partial(emoji[:2]) == [(0, 1, emoji[0]), (1, 2, emoji[1])]  # unfinished: bytes stay
    gpt2 = [token_text("\ufffd", "ĠÃ"), token_text("\ufffd", "©")]
    assert merge_partial(gpt2) == [(0, 2, " é")]


def test_truncate_and_fit_count_cells_not_characters():
    assert truncate("中文字符", 5) == "中文…"
    assert cell_len(truncate("🙂🙂🙂", 4)) <= 4
    for text in ("abc", "中文字符串", "🙂x", "\u00a0", "a\u0301"):
        assert cell_len(fit(escape_for_display(text), 6)) == 6
        assert cell_len(fit(escape_for_display(text), 6, "right")) == 6


def test_inert_keeps_spaces_and_escapes_the_rest():
    from stepscope.tracer.inert import inert

    assert inert("/tmp/my trace-exports/x.npy") == "/tmp/my trace-exports/x.npy"
    assert inert("a\x1b]52;c;AAAA\x07b") == "a\\x1b]52;c;AAAA\\x07b"  # OSC 52 made visible
    assert inert("[bold red]x\u202e\ufffe") == "[bold red]x\\u202e\\ufffe"


def test_one_escape_rule_for_tokens_names_and_cli():
    """tracer.inert (CLI, info), tui.text.inert_text (names in the TUI) and token display escape
    the same code points the same way."""
    from stepscope.tracer.inert import inert
    from stepscope.tui.text import inert_text

    for ch in ["\x1b", "\x85", "\u00a0", "\u00ad", "\u115f", "\u200b", "\u202e", "\u3164", "\ufe0f", "\ue000",
               "\ufffe", "\U000e0041", "\u0378"]:
        escaped = inert("x" + ch)  # after a letter: a token starting with a mark gets a ◌ base first
        assert escaped.startswith("x\\") and escaped == escape_for_display("x" + ch) == inert_text("x" + ch).plain, ch
    assert inert("a\nb") == "a\\x0ab" and inert("a\nb", newlines=True) == "a\nb"
    assert inert("x" * 10, limit=4) == "xxxx…" and inert_text("[red]x[/red]").plain == "[red]x[/red]"
