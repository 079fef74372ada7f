"""Strings from traces and models made inert for a terminal, without rich or torch: every control,
invisible, bidi, odd-space, surrogate, non-character, private-use and unassigned code point becomes
a visible escape. The one rule (`needs_escape`) for the CLI, `info` and the TUI (tui/text.py wraps
`inert` in a rich Text and builds token display on `escape_char`)."""

from __future__ import annotations

import json
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


# -- where strings enter: a trace's manifest and step entries, a live session's model facts ---------
TEXT_LIMIT = 1000  # characters a string from a trace or a model keeps where it enters ("…" marks a cut)
TOKEN_KEYS = frozenset({"text", "piece"})  # token text: kept as is, shown by the token rule (tui/text.py)
_PLAIN = (int, float, bool, type(None))


def inert_value(value: object, limit: int | None = TEXT_LIMIT) -> object:
    """A JSON value with every string in it (object keys included) made inert by `inert`, cut at
    `limit` characters; numbers, booleans and null as they are. A new value (lists and objects copied)."""
    kind = type(value)
    if kind is str:
        if value.isascii() and value.isprintable() and (limit is None or len(value) <= limit):
            return value
        return inert(value, limit)
    if kind is dict:
        return {inert_value(k, limit): inert_value(v, limit) for k, v in value.items()}
    if kind is list:
        return [inert_value(v, limit) for v in value]
    if kind in _PLAIN:
        return value
    return inert(value, limit)


def inert_token(token: dict) -> dict:
    """A token record with its text and piece as they are (the token rule shows them) and every
    other string inert."""
    if all(type(v) in _PLAIN for k, v in token.items() if k not in TOKEN_KEYS) and all(type(k) is str and k.isidentifier() for k in token):
        return token
    return {inert_value(k): (v if k in TOKEN_KEYS else inert_value(v)) for k, v in token.items()}


_ENTRY_PLAIN = frozenset({"index", "kind", "positions", "seconds", "file", "bytes", "checksum", "forced"})  # checked by the schema
_ENTRY_SHARED = frozenset({"aliases", "nonfinite", "intervened", "omitted", "settings"})  # often equal from step to step


def _shared(value: object, memo: dict) -> object:
    """`inert_value(value)`, one object for equal values seen before (read-only records)."""
    kind = type(value)
    if kind is dict and all(type(v) is str for v in value.values()):
        key = ("d", *value.items())
    elif kind is list and all(type(v) is str for v in value):
        key = ("l", *value)
    elif kind in (dict, list):
        key = json.dumps(value, sort_keys=True)
    else:
        return inert_value(value)
    hit = memo.get(key)
    if hit is None:
        hit = memo[key] = inert_value(value)
    return hit


def inert_sampling(sampling: dict, memo: dict) -> dict:
    """A sampling record with its stage names and any other string inert; equal stage lists shared."""
    out = {}
    for key, value in sampling.items():
        if type(value) in _PLAIN:
            out[key] = value
        elif key == "stages" and type(value) is list:
            stages = tuple((st.get("name"), st.get("kept")) if type(st) is dict and len(st) == 2 else (id(st), None) for st in value)
            hit = memo.get(stages)
            if hit is None:
                hit = memo[stages] = inert_value(value)
            out[key] = hit
        else:
            out[inert_value(key)] = inert_value(value)
    return out


def inert_entry(entry: dict, memo: dict | None = None) -> dict:
    """A step entry (steps.jsonl line, validated) with every string inert except its token's text;
    `memo` (one dict per trace) shares equal stage lists, alias maps and name lists between steps."""
    memo = {} if memo is None else memo
    out = {}
    for key, value in entry.items():
        if key in _ENTRY_PLAIN:
            out[key] = value
        elif key == "token" and type(value) is dict:
            out[key] = inert_token(value)
        elif key == "sampling" and type(value) is dict:
            out[key] = inert_sampling(value, memo)
        elif key in _ENTRY_SHARED:
            out[key] = _shared(value, memo)
        else:
            out[inert_value(key)] = inert_value(value)
    return out


def inert_manifest(manifest: dict) -> dict:
    """A manifest (validated) with every string inert: token texts by the token rule, the prompt
    whole with its line breaks, step entries by `inert_entry`."""
    out = {}
    memo: dict = {}
    for key, value in manifest.items():
        if key == "tokens" and type(value) is list:
            out[key] = [inert_token(t) if type(t) is dict else inert_value(t) for t in value]
        elif key == "steps" and type(value) is list:
            out[key] = [inert_entry(e, memo) if type(e) is dict else inert_value(e) for e in value]
        elif key == "prompt" and type(value) is str:
            out[key] = inert(value, None, newlines=True)
        else:
            out[inert_value(key)] = inert_value(value)
    return out
