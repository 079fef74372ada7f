"""Hand edits of a trace's JSON files for tests, re-stamped with their crc32 (as a writer would),
so that what a test changed is what the reader judges, not the checksum."""

from __future__ import annotations

import json
import os

from stepscope.tracer.trace_format import stamp_json, unstamp


def _load(raw: bytes, label: str):
    raw = raw.rstrip(b" \t\r\n")
    return json.loads(unstamp(raw, label) or raw)


def edit_manifest(path: str, fn) -> None:
    """fn(manifest dict) edits in place; manifest.json is rewritten stamped."""
    mpath = os.path.join(path, "manifest.json")
    m = _load(open(mpath, "rb").read(), mpath)
    fn(m)
    open(mpath, "wb").write(stamp_json(m))


def edit_entries(path: str, fn) -> None:
    """fn(list of step entries) edits in place; steps.jsonl (or a schema-1 manifest's steps) rewritten stamped."""
    lpath = os.path.join(path, "steps.jsonl")
    if not os.path.exists(lpath):  # a schema-1 trace: the entries live in the manifest
        return edit_manifest(path, lambda m: fn(m["steps"]))
    entries = [_load(line, lpath) for line in open(lpath, "rb").read().splitlines()]
    fn(entries)
    open(lpath, "wb").write(b"".join(stamp_json(e) + b"\n" for e in entries))
