"""Strings from traces and models made inert for a terminal, without rich or torch: every control,
invisible, bidi, odd-space, surrogate, non-character, private-use and unassigned code point becomes
a visible escape. The one rule (`needs_escape`) for the CLI, `info` and the TUI (tui/text.py wraps
`inert` in a rich Text and builds token display on `escape_char`)."""

from __future__ import annotations

import json
import unicodedata
from typing import Any

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


def inert_value(value: Any, limit: int | None = TEXT_LIMIT) -> object:
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


_TOKEN_CHECKED = frozenset({"id", "text", "piece", "special", "position"})  # the schema checks their types


def inert_token(token: dict) -> dict:
    """A token record with its text and piece as they are (the token rule shows them) and every
    other string inert."""
    if token.keys() <= _TOKEN_CHECKED:
        return token
    return {inert_value(k): (v if k in TOKEN_KEYS else inert_value(v)) for k, v in token.items()}


_ENTRY_PLAIN = frozenset({"index", "kind", "positions", "seconds", "file", "bytes", "checksum", "forced"})  # checked by the schema
_ENTRY_SHARED = frozenset({"aliases", "nonfinite", "intervened", "omitted", "settings"})  # often equal from step to step


def _shared(value: Any, memo: dict) -> object:
    """`inert_value(value)`, one object for equal values seen before (read-only records)."""
    kind = type(value)
    key: object
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


_SAMPLING_CHECKED = frozenset({"greedy", "temperature", "top_k", "top_p", "min_p", "chosen_id", "chosen_rank", "chosen_prob",
                               "chosen_raw_prob", "chosen_temp_prob", "top1_id", "top1_prob", "entropy", "raw_entropy",
                               "nucleus_size", "nucleus_mass", "stages"})  # numbers and booleans the schema checks


_SETTINGS = ("temperature", "top_p", "min_p")


def _stages(value: object, memo: dict) -> object:
    """A stage list made inert, one object for equal lists seen before."""
    if type(value) is not list:
        return inert_value(value)
    try:
        key = ("s", *((st["name"], st["kept"]) for st in value if len(st) == 2))
    except (TypeError, KeyError):
        return inert_value(value)
    if len(key) != len(value) + 1:
        return inert_value(value)
    hit = memo.get(key)
    if hit is None:
        hit = memo[key] = inert_value(value)
    return hit


def inert_sampling(sampling: dict, memo: dict) -> dict:
    """A sampling record, in place: its stage names and any other string inert; equal stage lists shared."""
    stages = sampling.get("stages")
    if stages is not None:
        sampling["stages"] = _stages(stages, memo)
    for key in _SETTINGS:  # the same few numbers at every step: one object each
        v = sampling.get(key)
        if type(v) is float:
            sampling[key] = memo.setdefault(("f", v), v)
    if sampling.keys() <= _SAMPLING_CHECKED:
        return sampling
    odd = False
    for key, value in sampling.items():
        if key != "stages" and (type(value) not in _PLAIN or not (key.isascii() and key.isprintable())):
            odd = True
    if odd:
        items = list(sampling.items())
        sampling.clear()
        sampling.update((inert_value(k), v if k == "stages" else inert_value(v)) for k, v in items)
    return sampling


def inert_entry(entry: dict, memo: dict | None = None) -> dict:
    """A step entry (a steps.jsonl line, validated and freshly parsed), in place: every string inert
    except its token's text; `memo` (one dict per trace) shares equal stage lists, alias maps and
    name lists between steps (a trace may hold hundreds of thousands)."""
    memo = {} if memo is None else memo
    odd = False
    for key, value in entry.items():
        if key in _ENTRY_PLAIN:
            continue
        if key == "token" and type(value) is dict:
            entry[key] = inert_token(value)
        elif key == "sampling" and type(value) is dict:
            inert_sampling(value, memo)
        elif key in _ENTRY_SHARED:
            entry[key] = _shared(value, memo)
        else:
            odd = True
    if odd:
        items = list(entry.items())
        entry.clear()
        entry.update((k, v) if k in _ENTRY_PLAIN or k in _ENTRY_SHARED or k in ("token", "sampling")
                     else (inert_value(k), inert_value(v)) for k, v in items)
    return entry


def inert_manifest(manifest: dict) -> dict:
    """A manifest (validated) with every string inert: token texts by the token rule, the prompt
    whole with its line breaks, step entries by `inert_entry`."""
    out: dict = {}
    memo: dict = {}
    for key, value in manifest.items():
        if key == "tokens" and type(value) is list:
            out[key] = [inert_token(t) if type(t) is dict else inert_value(t) for t in value]
        elif key == "steps" and type(value) is list:
            out[key] = [inert_entry(dict(e), memo) if type(e) is dict else inert_value(e) for e in value]
        elif key == "prompt" and type(value) is str:
            out[key] = inert(value, None, newlines=True)
        else:
            out[inert_value(key)] = inert_value(value)
    return out
