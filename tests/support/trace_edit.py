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


def _entry_at(path: str, index: int) -> dict:
    lpath = os.path.join(path, "steps.jsonl")
    return [_load(line, lpath) for line in open(lpath, "rb").read().splitlines()][index]


def rewrite_step(path: str, index: int, fn) -> None:
    """fn({name: array}) edits step `index`'s stored arrays in place; the step file is written again
    as the writer writes one (checksums, aliases) and its entry re-stamped: a hostile writer's edit."""
    from safetensors.numpy import load_file

    from stepscope.tracer.writer import write_step_file

    entry = _entry_at(path, index)
    fpath = os.path.join(path, entry["file"])
    arrays = load_file(fpath)
    arrays.update({alias: arrays[target] for alias, target in (entry.get("aliases") or {}).items()})
    fn(arrays)
    size, checksum, aliases = write_step_file(fpath, arrays)

    def fix(es):
        es[index].update(bytes=size, checksum=checksum)
        es[index].pop("aliases", None)
        if aliases:
            es[index]["aliases"] = aliases

    edit_entries(path, fix)


def edit_step_header(path: str, index: int, fn) -> None:
    """fn(header dict) edits step `index`'s safetensors header (JSON, __metadata__ included) in place;
    the file keeps its data, the entry gets the file's new size and checksum (re-stamped)."""
    import struct

    from stepscope.tracer.trace_format import CRC_KEY, parse_crc_list, step_checksum

    entry = _entry_at(path, index)
    fpath = os.path.join(path, entry["file"])
    raw = open(fpath, "rb").read()
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8 : 8 + n])
    listed = header["__metadata__"][CRC_KEY]
    crcs = parse_crc_list(listed, len(listed) // 8)
    fn(header)
    body = json.dumps(header, separators=(",", ":")).encode()
    body += b" " * (-len(body) % 8)
    prefix = struct.pack("<Q", len(body)) + body
    open(fpath, "wb").write(prefix + raw[8 + n :])
    edit_entries(path, lambda es: es[index].update(bytes=len(prefix) + len(raw) - 8 - n, checksum=step_checksum(prefix, crcs)))


def rewrite_lens(path: str, fn, checksum: bool = True) -> None:
    """fn({name: array}) edits lens.safetensors' arrays; the file is written as the writer writes it
    and, with `checksum`, the manifest records the new file's checksum (re-stamped)."""
    import zlib

    from safetensors.numpy import load_file

    from stepscope.tracer.trace_format import step_checksum
    from stepscope.tracer.writer import header_bytes, write_safetensors

    fpath = os.path.join(path, "lens.safetensors")
    arrays = load_file(fpath)
    fn(arrays)
    crcs = [zlib.crc32(memoryview(a.reshape(-1)).cast("B")) for a in arrays.values()]
    prefix = header_bytes(arrays, crcs)
    write_safetensors(fpath, prefix, list(arrays.values()))
    if checksum:
        edit_manifest(path, lambda m: m["model"]["lens"].update(checksum=step_checksum(prefix, crcs)))
