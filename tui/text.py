"""Token text -> safe display: whitespace made visible, control characters escaped, never markup.

Token text comes from the model and is data. Nothing here parses markup: `display_token` builds a
`rich.text.Text` piece by piece, so `[red]x[/red]` shows literally, and no ESC, BEL or other
control byte reaches the terminal (each is shown as a visible escape such as `\\x1b`).
"""

from __future__ import annotations

from rich.text import Text

SPACE = "·"
NEWLINE = "↵"
TAB = "⇥"
RETURN = "␍"
EMPTY = "∅"

# visible replacements for whitespace, with the space markers of byte-level BPE (Ġ) and
# SentencePiece (▁) vocabularies for texts taken from a raw vocabulary
_WHITESPACE = {" ": SPACE, "Ġ": SPACE, "▁": SPACE, "\n": NEWLINE, "\t": TAB, "\r": RETURN}

# invisible or reordering characters that would make a token lie about its content
_INVISIBLE = {0x00AD, 0x061C, 0x180E, 0x2028, 0x2029, 0x2060, 0x2061, 0x2062, 0x2063, 0x2064, 0xFEFF}
_INVISIBLE.update(range(0x200B, 0x2010))  # zero-width space/joiners, LRM, RLM
_INVISIBLE.update(range(0x202A, 0x202F))  # bidi embeddings and overrides
_INVISIBLE.update(range(0x2066, 0x206A))  # bidi isolates

STYLE_WHITESPACE = "dim"
STYLE_ESCAPE = "bold magenta"
STYLE_SPECIAL = "bold italic cyan"


def _escape_char(ch: str) -> str | None:
    """The visible escape of a control/invisible character, or None when it displays as itself."""
    code = ord(ch)
    if code < 0x20 or code == 0x7F or 0x80 <= code <= 0x9F:
        return f"\\x{code:02x}"
    if code in _INVISIBLE:
        return f"\\u{code:04x}"
    return None


def _pieces(text: str) -> list[tuple[str, str]]:
    """Split into (display string, kind) with kind in {"text", "space", "escape"}."""
    out: list[tuple[str, str]] = []
    for ch in text:
        if ch in _WHITESPACE:
            piece, kind = _WHITESPACE[ch], "space"
        else:
            escaped = _escape_char(ch)
            piece, kind = (escaped, "escape") if escaped is not None else (ch, "text")
        if out and out[-1][1] == kind:
            out[-1] = (out[-1][0] + piece, kind)
        else:
            out.append((piece, kind))
    return out


def escape_for_display(text: str) -> str:
    """Plain-string form of `display_token`: whitespace visible, control characters as escapes."""
    if not text:
        return EMPTY
    return "".join(piece for piece, _ in _pieces(text))


def display_token(text: str, special: bool = False) -> Text:
    """A styled, inert `Text` for one token: special tokens distinct, whitespace dim, escapes marked."""
    if not text:
        return Text(EMPTY, style=STYLE_WHITESPACE, end="")
    if special:
        return Text(escape_for_display(text), style=STYLE_SPECIAL, end="")
    styles = {"text": "", "space": STYLE_WHITESPACE, "escape": STYLE_ESCAPE}
    return Text.assemble(*((piece, styles[kind]) for piece, kind in _pieces(text)), end="")


def truncate(text: str, width: int, ellipsis: str = "…") -> str:
    """`text` cut to at most `width` cells (by characters), with an ellipsis when cut."""
    if width <= 0:
        return ""
    if len(text) <= width:
        return text
    return text[: width - 1] + ellipsis if width > 1 else text[:1]
