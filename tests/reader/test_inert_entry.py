"""Strings from a trace are made inert where they enter (the reader), once, by tracer.inert:
every string of the manifest and the step entries except token text, and step file tensor names."""

from __future__ import annotations

import json

import pytest

from stepscope.tracer import load_trace
from stepscope.tracer.inert import TEXT_LIMIT, inert_entry, inert_value
from stepscope.tracer.trace_format import TraceError, stamp_json
from tests.support.hostile_trace import ESC, build_hostile_trace, raw_controls


def _strings(value, path=""):
    """(path, string) of every string in a JSON value, keys included."""
    if isinstance(value, str):
        yield path, value
    elif isinstance(value, dict):
        for k, v in value.items():
            yield f"{path}.<key>", k
            yield from _strings(v, f"{path}.{k[:20]}")
    elif isinstance(value, list):
        for i, v in enumerate(value):
            yield from _strings(v, f"{path}[{i}]")


@pytest.fixture(scope="module")
def hostile(tmp_path_factory):
    return build_hostile_trace(tmp_path_factory.mktemp("hostile") / "t")


def test_every_string_of_a_hostile_trace_is_inert_and_cut_except_token_text(hostile):
    tr = load_trace(hostile)
    bad = [(p, raw_controls(s)) for p, s in _strings({k: v for k, v in tr.manifest.items() if k not in ("tokens",)})
           if raw_controls(s) and not p.endswith(("token.text", "token.piece"))]
    assert not bad, bad[:5]
    assert tr.model["name"].startswith("\\x1b]52;c;UFdORUQ=\\x07\\x1b]0;pwned\\x07\\x1b[2J\\x9b31m\\u202e\\u2066\\x85")
    (key, values), = tr.manifest["extra"].items()
    for long in (tr.model["name"], tr.model["no_attention_reason"], key, values[0]):  # cut, with a marker
        assert long.endswith("…") and len(long) < 2 * TEXT_LIMIT
    assert "\n" not in tr.manifest["prompt"][:200] and tr.manifest["prompt"].endswith("y")  # the prompt whole
    stage = tr.steps[1].sampling["stages"][-1]["name"]
    assert stage.startswith("\\x1b]52") and not raw_controls(stage)
    assert tr.steps[1].token["text"] == "\x1b[31m"  # token text as it is: the token rule shows it


def test_a_hostile_alias_name_is_refused_in_one_inert_line(hostile, tmp_path):
    """An alias must be a recorded name of the model's layer count: an escape-laden one is refused,
    and the refusal itself carries no raw control character."""
    import shutil

    from tests.support.hostile_trace import hostile as hostile_text
    from tests.support.trace_edit import edit_entries

    bad = str(tmp_path / "alias")
    shutil.copytree(hostile, bad)

    def entries(es):
        es[1]["aliases"][hostile_text(200, "alias")] = "hook_embed"

    edit_entries(bad, entries)
    with pytest.raises(TraceError) as refused:
        _ = load_trace(bad).steps[1].names
    message = str(refused.value)
    assert "alias" in message and "\\x1b]52" in message and not raw_controls(message) and "\n" not in message


def test_inert_entry_shares_equal_records_and_is_the_identity_on_plain_entries():
    e = {"index": 1, "kind": "decode", "positions": [6, 7], "token": {"id": 9, "text": "\x1b[31m"},
         "sampling": {"chosen_prob": 0.5, "stages": [{"name": "raw", "kept": 50}]}, "aliases": {"a.b": "c"}, "nonfinite": []}
    memo: dict = {}
    a, b = inert_entry(e, memo), inert_entry(json.loads(json.dumps(e)), memo)
    assert a == e and b == e
    assert a["sampling"]["stages"] is b["sampling"]["stages"] and a["aliases"] is b["aliases"]
    assert a["token"]["text"] == "\x1b[31m"
    assert inert_value({"\x1b": ["\u202e" * 2000]}) == {"\\x1b": [inert_value("\u202e" * 2000)]}
    assert inert_value("\u202e" * 2000) == "\\u202e" * TEXT_LIMIT + "…"


def _log(path, lines: bytes) -> str:
    with open(f"{path}/steps.jsonl", "wb") as fh:
        fh.write(lines)
    return path


def test_a_log_line_longer_than_the_limit_is_refused_without_being_held(tmp_path):
    import tracemalloc

    from stepscope.tracer.schema import MAX_LOG_LINE
    from tests.support.synthetic_trace import build_trace

    path = build_trace(tmp_path / "t", 1)
    lines = open(f"{path}/steps.jsonl", "rb").read().splitlines(keepends=True)
    entry = json.loads(lines[1][: lines[1].rindex(b',"crc"')] + b"}")
    entry["junk"] = "x" * (40 * MAX_LOG_LINE)  # a 160 MB string in a key the schema does not know
    _log(path, lines[0] + stamp_json(entry) + b"\n")
    tracemalloc.start()
    try:
        with pytest.raises(TraceError, match=r"steps.jsonl line 2: longer than \d+ bytes"):
            load_trace(path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 4 * MAX_LOG_LINE, peak


def test_nul_bytes_after_a_valid_log_are_refused_without_being_held(tmp_path):
    import tracemalloc

    from stepscope.tracer.schema import MAX_LOG_LINE
    from tests.support.synthetic_trace import build_trace

    path = build_trace(tmp_path / "t", 1)
    with open(f"{path}/steps.jsonl", "ab") as fh:
        fh.truncate(fh.tell() + 100 * 1024 * 1024)  # 100 MiB of NUL bytes, sparse
    tracemalloc.start()
    try:
        with pytest.raises(TraceError, match="line 3: longer than"):
            load_trace(path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 4 * MAX_LOG_LINE, peak


def test_a_torn_last_line_is_still_ignored(tmp_path):
    from tests.support.synthetic_trace import build_trace
    from tests.support.trace_edit import edit_manifest

    path = build_trace(tmp_path / "t", 2)

    def killed(m):  # a run killed while writing its last line: not finished
        m["finished"], m["stop_reason"] = False, None

    edit_manifest(path, killed)
    raw = open(f"{path}/steps.jsonl", "rb").read()
    _log(path, raw[: raw.rindex(b"\n", 0, len(raw) - 1) + 40])  # the last line cut short
    assert len(load_trace(path).steps) == 2


def test_esc_is_not_in_the_loaded_model_facts(hostile):
    text = json.dumps(load_trace(hostile).model, ensure_ascii=False)
    assert ESC not in text and "\x1b" not in text and "\u202e" not in text
