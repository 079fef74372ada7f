"""Strings from traces and models made inert for a terminal, without rich or torch: every control,
invisible, bidi, odd-space, surrogate, non-character, private-use and unassigned code point becomes
a visible escape. The one rule (`needs_escape`) for the CLI, `info` and the TUI (tui/text.py wraps
`inert` in a rich Text and builds token display on `escape_char`)."""

from __future__ import annotations

import unicodedata

_INVISIBLE = {0x00AD, 0x034F, 0x061C, 0x115F, 0x1160, 0x17B4, 0x17B5, 0x180E, 0x2028, 0x2029, 0x3164, 0xFEFF, 0xFFA0}
_INVISIBLE.update(range(0x200B, 0x2010))  # zero-width space/joiners, LRM, RLM
_INVISIBLE.update(range(0x202A, 0x202F))  # bidi embeddings and overrides
_INVISIBLE.update(range(0x2060, 0x2070))  # word joiner, invisible operators, bidi isolates
_INVISIBLE.update(range(0xFE00, 0xFE10))  # variation selectors
_INVISIBLE.update(range(0xFFF9, 0xFFFC))  # interlinear annotation
# general categories escaped past ASCII: other spaces, line/paragraph separators, format, private
# use, surrogates, unassigned (which includes the non-characters U+FFFE, U+FFFF, U+FDD0…)
_ESCAPED_CATEGORIES = {"Zs", "Zl", "Zp", "Cf", "Co", "Cs", "Cn"}


def needs_escape(code: int) -> bool:
    """Control, invisible, odd space, surrogate, non-character, private-use or unassigned code point."""
    if code < 0x20 or 0x7F <= code <= 0x9F or code in _INVISIBLE:
        return True
    if code < 0x80:
        return False
    return (
        0xD800 <= code <= 0xDFFF  # lone surrogates (undecodable bytes)
        or 0xE000 <= code <= 0xF8FF  # private use
        or code >= 0xF0000  # supplementary private use planes
        or 0xFDD0 <= code <= 0xFDEF  # non-characters
        or (code & 0xFFFE) == 0xFFFE  # U+xFFFE, U+xFFFF
        or 0xE0000 <= code <= 0xE007F  # tag characters
        or unicodedata.category(chr(code)) in _ESCAPED_CATEGORIES
    )


def escape_char(ch: str) -> str:
    """`ch` itself, or its visible escape: `\\x1b` for a C0/C1 control, `\\u00a0`, `\\U000e0041`."""
    code = ord(ch)
    if not needs_escape(code):
        return ch
    if code < 0xA0:
        return f"\\x{code:02x}"
    return f"\\u{code:04x}" if code <= 0xFFFF else f"\\U{code:08x}"


def inert(value: object, limit: int | None = 300, newlines: bool = False) -> str:
    """`str(value)` with every unsafe code point escaped visibly, cut to `limit` characters (None:
    no limit); `newlines` keeps line breaks (a multi-line message), otherwise they show as `\\x0a`."""
    text = value if isinstance(value, str) else str(value)
    cut = limit is not None and len(text) > limit
    if cut:
        text = text[:limit]
    if not (text.isascii() and text.isprintable()):
        text = "".join(ch if newlines and ch == "\n" else escape_char(ch) for ch in text)
    return text + ("…" if cut else "")
