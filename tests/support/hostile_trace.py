"""A synthetic trace whose every string field holds terminal escapes (OSC 52 clipboard, OSC 0
title, CSI, C1), bidi controls and values as long as its schema allows (10,000 characters where
it sets no limit), and the check that text shown from it holds none of them raw."""

from __future__ import annotations

import re

from tests.support.synthetic_trace import build_trace
from tests.support.trace_edit import edit_entries, edit_manifest

ESC = "\x1b]52;c;UFdORUQ=\x07\x1b]0;pwned\x07\x1b[2J\x9b31m\u202e\u2066\x85"
LONG = 10_000


def hostile(n: int, tag: str = "") -> str:
    """`tag` behind the escapes, padded to `n` characters."""
    s = ESC + tag
    return s + "y" * max(0, n - len(s))


def build_hostile_trace(path, n_decode: int = 3) -> str:
    """build_trace's trace with every string field hostile (same arrays, so every pane draws)."""
    path = build_trace(path, n_decode)

    def manifest(m):
        model = m["model"]
        for key in ("name", "family", "architecture", "act", "norm", "positional", "source", "model_type", "weights"):
            model[key] = hostile(4096, key)
        model["data_flow"] = [hostile(1000, "flow")]
        model["missing_names"] = [hostile(200, "missing")]
        model["not_applicable"] = model["not_applicable"] + [hostile(200, "na")]
        model["params"][hostile(100, "param")] = 7
        model["no_attention_reason"] = hostile(LONG, "reason")  # keys the schema does not know
        model["params_note"] = hostile(LONG, "note")
        model[hostile(LONG, "key")] = hostile(LONG, "value")
        m["tokenizer"].update(name=hostile(200, "tok"), **{"class": hostile(200, "cls")})
        m["device"] = hostile(200, "device")
        m["created"] = hostile(64, "created")
        m["stop_reason"] = "max_new_tokens"  # a known value only: a hostile one is refused
        m["attn_implementation"] = hostile(1000, "impl")
        m["prompt"] = hostile(LONG, "prompt")
        m["generation"]["mode"] = hostile(200, "mode")
        m["dtype"]["model"] = ESC[:32]
        m["versions"]["x"] = hostile(100, "ver")
        m["record"] = ["*", hostile(1000, "rec")]
        m["extra"] = {hostile(LONG, "k"): [hostile(LONG, "v")]}

    def entries(es):
        for e in es:
            e["sampling"]["stages"].append({"name": hostile(64, "stage"), "kept": 1})
            e["nonfinite"] = [hostile(200, "nonfinite")]
            e["note"] = hostile(LONG, "entry")
            e["sampling"]["note"] = hostile(LONG, "sampling")

    edit_manifest(path, manifest)
    edit_entries(path, entries)
    return path


# what must never reach a terminal raw: C0 controls but the line break, DEL, C1, bidi controls and
# isolates, line/paragraph separators, private use, non-characters
_RAW = re.compile("[\x00-\x09\x0b-\x1f\x7f-\x9f\u200b-\u200f\u2028-\u202e\u2066-\u2069\ufeff\ue000-\uf8ff\ufffe\uffff]")
_SGR = re.compile(r"\x1b\[[0-9;]*m")  # the colours the console itself writes


def raw_controls(text: str, console_colours: bool = False) -> list[str]:
    """The code points in `text` that must not reach a terminal (`console_colours`: the console's
    own SGR colour codes are allowed and removed first)."""
    if console_colours:
        text = _SGR.sub("", text)
    return [hex(ord(c)) for c in _RAW.findall(text)]
