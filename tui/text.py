"""Token text -> safe display: whitespace made visible, control characters escaped, never markup.

Token text comes from the model and is data. Nothing here parses markup: `display_token` builds a
`rich.text.Text` piece by piece, so `[red]x[/red]` shows literally, and no ESC, BEL or other
control byte reaches the terminal (each is shown as a visible escape such as `\\x1b`). Unicode
spaces other than U+0020, format characters, non-characters, private-use and unassigned code
points are escaped too (`\\u00a0`). A token that is part of a UTF-8 sequence carries its bytes as
lone surrogates (`surrogateescape`, see `token_text`) and shows them as `<0xC2>`; `merge_partial`
joins consecutive such tokens into the character they complete. Which code points are escaped is
the one rule of `tracer.inert`. Every other string of a trace or a model is inert already (the reader
and the live session make it so where it enters); paths, messages and what the user typed use
`inert_text`, a rich Text around `tracer.inert.inert`.
"""

from __future__ import annotations

import re
import unicodedata
from functools import lru_cache

from rich.cells import cell_len
from rich.text import Text

from stepscope.tracer.inert import escape_char, inert

SPACE = "·"
LONE_SPACE = "␣"  # a token of spaces only: `·` alone reads as a full stop
NEWLINE = "↵"
TAB = "⇥"
RETURN = "␍"
EMPTY = "∅"
COMBINING_BASE = "◌"  # shown before a token that starts with a combining mark

# visible replacements for whitespace, with the space markers of byte-level BPE (Ġ) and
# SentencePiece (▁) vocabularies for texts taken from a raw vocabulary
_WHITESPACE = {" ": SPACE, "Ġ": SPACE, "▁": SPACE, "\n": NEWLINE, "\t": TAB, "\r": RETURN}

STYLE_WHITESPACE = "dim"
STYLE_ESCAPE = "bold magenta"
STYLE_SPECIAL = "bold italic cyan"
STYLE_BYTES = "bold yellow"

_BYTE_PIECE = re.compile(r"<0x([0-9A-Fa-f]{2})>")


def _gpt2_byte_decoder() -> dict[str, int]:
    """GPT-2's byte-level BPE alphabet: printable stand-in character -> byte."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return {chr(c): b for b, c in zip(bs, cs)}


_BYTE_DECODER = _gpt2_byte_decoder()


def piece_bytes(piece: str | None) -> bytes | None:
    """The bytes a vocabulary piece stands for: SentencePiece byte fallback (`<0xC2>`, possibly
    several) or a GPT-2 byte-level piece (`ĠÃ`); None for any other piece."""
    if not piece:
        return None
    if _BYTE_PIECE.fullmatch(piece) or re.fullmatch(r"(?:<0x[0-9A-Fa-f]{2}>)+", piece):
        return bytes(int(h, 16) for h in _BYTE_PIECE.findall(piece))
    if all(ch in _BYTE_DECODER for ch in piece):
        return bytes(_BYTE_DECODER[ch] for ch in piece)
    return None


def token_text(text: str, piece: str | None) -> str:
    """A token's text with the bytes of a partial UTF-8 sequence kept (as lone surrogates).

    Decoding a token that holds part of a character gives `�`; when its vocabulary piece tells the
    bytes and they are not valid UTF-8 on their own, the undecodable bytes become U+DC80+byte
    (Python's `surrogateescape`), which `display_token` shows as `<0xC2>`.
    """
    if "\ufffd" not in (text or ""):
        return text
    raw = piece_bytes(piece)
    if raw is None:
        return text
    try:
        raw.decode("utf-8")
        return text  # a genuine U+FFFD (or the piece is not this token's bytes)
    except UnicodeDecodeError:
        return raw.decode("utf-8", "surrogateescape")


def has_partial_bytes(text: str) -> bool:
    """Whether a `token_text` result holds bytes of an unfinished UTF-8 sequence."""
    return any(0xDC80 <= ord(ch) <= 0xDCFF for ch in text)


def merge_partial(texts: list[str]) -> list[tuple[int, int, str]]:
    """Group consecutive tokens whose bytes together complete characters: [(start, end, text)].

    A run of tokens that each hold partial bytes and whose concatenation decodes as UTF-8 becomes
    one group with the decoded text (`<0xC2>` + `<0xBD>` -> `½`); every other token is its own group.
    """
    out: list[tuple[int, int, str]] = []
    i, n = 0, len(texts)
    while i < n:
        group = None
        if has_partial_bytes(texts[i]):
            for j in range(i + 2, min(n, i + 4) + 1):
                if not has_partial_bytes(texts[j - 1]):
                    break
                joined = "".join(texts[i:j]).encode("utf-8", "surrogateescape")
                try:
                    group = (i, j, joined.decode("utf-8"))
                    break
                except UnicodeDecodeError:
                    continue
        out.append(group or (i, i + 1, texts[i]))
        i = out[-1][1]
    return out


@lru_cache(maxsize=4096)
def _escape_char(ch: str) -> tuple[str, str] | None:
    """(visible escape, kind) of a control/invisible/odd character, or None when it shows as itself."""
    code = ord(ch)
    if 0xDC80 <= code <= 0xDCFF:
        return f"<0x{code - 0xDC00:02X}>", "bytes"
    escaped = escape_char(ch)
    return None if escaped == ch else (escaped, "escape")


def _pieces(text: str) -> list[tuple[str, str]]:
    """Split into (display string, kind) with kind in {"text", "space", "escape", "bytes"}."""
    out: list[tuple[str, str]] = []
    if text and unicodedata.category(text[0]).startswith("M"):
        out.append((COMBINING_BASE, "space"))  # a leading combining mark would join the previous cell
    for ch in text:
        if ch in _WHITESPACE:
            piece, kind = _WHITESPACE[ch], "space"
        else:
            escaped = _escape_char(ch)
            piece, kind = escaped if escaped is not None else (ch, "text")
        if out and out[-1][1] == kind:
            out[-1] = (out[-1][0] + piece, kind)
        else:
            out.append((piece, kind))
    return out


_SPACES = frozenset(" Ġ▁")


def _lone_spaces(text: str) -> bool:
    """Whether a token is spaces only (shown `␣`, not `·`, which alone reads as a full stop)."""
    return bool(text) and all(ch in _SPACES for ch in text)


def escape_for_display(text: str) -> str:
    """Plain-string form of `display_token`: whitespace visible, control characters as escapes."""
    if not text:
        return EMPTY
    if _lone_spaces(text):
        return LONE_SPACE * len(text)
    return "".join(piece for piece, _ in _pieces(text))


def inert_text(value: object, style: str = "", limit: int | None = 300, newlines: bool = False) -> Text:
    """A name, path or message from a trace, a model or the file system as a `Text`: never markup,
    unsafe code points escaped by `tracer.inert.inert` (`limit` and `newlines` as there)."""
    return Text(inert(value, limit, newlines), style=style)


_STYLES = {"text": "", "space": STYLE_WHITESPACE, "escape": STYLE_ESCAPE, "bytes": STYLE_BYTES}


def display_token(text: str, special: bool = False, alone: bool = True) -> Text:
    """A styled, inert `Text` for one token: special tokens distinct, whitespace dim, escapes marked.
    A token of spaces only shows `␣` when `alone` (in a list or a column); in running text (the
    token strip) its neighbours make `·` clear."""
    if not text:
        return Text(EMPTY, style=STYLE_WHITESPACE, end="")
    if special:
        return Text(escape_for_display(text), style=STYLE_SPECIAL, end="")
    if alone and _lone_spaces(text):
        return Text(LONE_SPACE * len(text), style=STYLE_WHITESPACE, end="")
    return Text.assemble(*((piece, _STYLES[kind]) for piece, kind in _pieces(text)), end="")


def truncate(text: str, width: int, ellipsis: str = "…") -> str:
    """`text` cut to at most `width` terminal cells (wide characters count two), with an ellipsis
    when cut."""
    if width <= 0:
        return ""
    if cell_len(text) <= width:
        return text
    room = width - 1 if width > 1 else width
    out, used = [], 0
    for ch in text:
        w = cell_len(ch)
        if used + w > room:
            break
        out.append(ch)
        used += w
    return "".join(out) + (ellipsis if width > 1 else "")


def fit(text: str, width: int, align: str = "left") -> str:
    """`text` truncated and padded to exactly `width` cells (`align` "left" or "right")."""
    cut = truncate(text, width)
    pad = " " * max(0, width - cell_len(cut))
    return cut + pad if align == "left" else pad + cut
