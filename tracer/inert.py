"""Strings from traces and models made inert for a terminal, without rich: every control,
invisible, bidi, surrogate, non-character and private-use code point becomes a visible escape."""

from __future__ import annotations

_INVISIBLE = {0x00AD, 0x034F, 0x061C, 0x115F, 0x1160, 0x17B4, 0x17B5, 0x180E, 0x2028, 0x2029, 0x3164, 0xFEFF, 0xFFA0}
_INVISIBLE.update(range(0x200B, 0x2010))  # zero-width space/joiners, LRM, RLM
_INVISIBLE.update(range(0x202A, 0x202F))  # bidi embeddings and overrides
_INVISIBLE.update(range(0x2060, 0x2070))  # word joiner, invisible operators, bidi isolates
_INVISIBLE.update(range(0xFE00, 0xFE10))  # variation selectors
_INVISIBLE.update(range(0xFFF9, 0xFFFC))  # interlinear annotation


def needs_escape(code: int) -> bool:
    """Control, invisible, surrogate, non-character or private-use code point."""
    return (
        code < 0x20
        or 0x7F <= code <= 0x9F
        or code in _INVISIBLE
        or 0xD800 <= code <= 0xDFFF  # lone surrogates (undecodable bytes)
        or 0xE000 <= code <= 0xF8FF  # private use
        or code >= 0xF0000  # supplementary private use planes
        or 0xFDD0 <= code <= 0xFDEF  # non-characters
        or (code & 0xFFFE) == 0xFFFE  # U+xFFFE, U+xFFFF
        or 0xE0000 <= code <= 0xE007F  # tag characters
    )


def escape_char(ch: str) -> str:
    code = ord(ch)
    if not needs_escape(code):
        return ch
    if code <= 0xFF:
        return f"\\x{code:02x}"
    return f"\\u{code:04x}" if code <= 0xFFFF else f"\\U{code:08x}"


def inert(value: object, limit: int = 300) -> str:
    """`str(value)` with every unsafe code point escaped visibly, cut to `limit` characters."""
    text = value if isinstance(value, str) else str(value)
    cut = len(text) > limit
    out = "".join(escape_char(ch) for ch in (text[:limit] if cut else text))
    return out + ("…" if cut else "")
