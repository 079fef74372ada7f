"""Constants and small helpers of the on-disk trace format (no torch, no numpy needed).

A trace is a directory (schema 2; docs/TRACE_FORMAT.md):
    manifest.json              schema, model, tokenizer, prompt, settings, prompt tokens
    steps.jsonl                append-only: one JSON step entry per line (O(1) per step)
    step_00000.safetensors     the prefill forward (step 0)
    step_00001.safetensors     the forward over generated token 1, ...
Each step file is written to a temporary name and renamed into place before its line is
appended to steps.jsonl: a trace cut short by Ctrl-C, a crash or a kill always loads up to its
last complete step (a torn last line is ignored). Schema-1 traces (steps inside manifest.json)
still open.

Integrity: manifest.json and every steps.jsonl line end with a crc32 of their own bytes,
`{...,"crc":"xxxxxxxx"}` (stamp/unstamp below), like each step file's entry checksum: accidental
damage to any file of a trace is detected on open. A checksum is no signature: whoever edits a
file on purpose can re-stamp it.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
import zlib

SCHEMA = "stepscope.trace"
SCHEMA_VERSION = 2
READABLE_VERSIONS = (1, 2)
MANIFEST = "manifest.json"
STEP_LOG = "steps.jsonl"
TOKENIZER = "tokenizer.json"
MANIFEST_PAD = 512  # trailing spaces: room to rewrite the manifest in place on a full disk


def _file_mode() -> int:
    """0o666 less the process umask: the mode an ordinary open() would give a new file."""
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


_FILE_MODE = _file_mode()


class TraceError(Exception):
    """A trace cannot be read: missing, corrupted or of an unknown schema. One clear line."""


class TraceWriteError(TraceError):
    """A trace cannot be written (unwritable directory, full disk)."""


_STAMP_HEAD = b',"crc":"'
_STAMP_LEN = len(_STAMP_HEAD) + 10  # ,"crc":"xxxxxxxx"}
STAMP_ANYWHERE = re.compile(rb',"crc":"[0-9a-f]{8}"\}')


def stamp(body: bytes) -> bytes:
    """A compact JSON object's bytes with the crc32 of those bytes appended as its last member:
    b'{"a":1}' -> b'{"a":1,"crc":"xxxxxxxx"}'."""
    if body[:1] != b"{" or body[-1:] != b"}" or body == b"{}":
        raise ValueError("stamp() takes the bytes of a non-empty JSON object")
    return body[:-1] + b'%s%08x"}' % (_STAMP_HEAD, zlib.crc32(body))


def stamp_json(obj: dict) -> bytes:
    """The compact JSON of `obj` (a dict without "crc"), stamped."""
    return stamp(json.dumps(obj, ensure_ascii=False, separators=(",", ":")).encode("utf-8"))


def unstamp(raw: bytes, label: str) -> bytes | None:
    """The object's bytes without its stamp (what the crc covers) when `raw` ends with one that
    matches; None when it carries no stamp; TraceError when the bytes do not match the stamp."""
    tail = raw[-_STAMP_LEN:]
    if len(raw) <= _STAMP_LEN + 1 or not tail.startswith(_STAMP_HEAD) or not tail.endswith(b'"}'):
        return None
    digits = tail[len(_STAMP_HEAD) : -2]
    if digits.strip(b"0123456789abcdef"):
        return None
    body = raw[:-_STAMP_LEN] + b"}"
    if zlib.crc32(body) != int(digits, 16):
        raise TraceError(f"{label}: checksum mismatch (the file was modified or damaged)")
    return body


def step_filename(index: int) -> str:
    return f"step_{index:05d}.safetensors"


def atomic_write(path: str, fill) -> None:
    """Create `path` whole or not at all: `fill(fd, tmp)` writes a temporary file in the same
    directory (fd open for reading and writing, closed afterwards), which is then renamed."""
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", dir=os.path.dirname(os.path.abspath(path)))
    try:
        try:
            fill(fd, tmp)
        finally:
            os.close(fd)
        os.chmod(tmp, _FILE_MODE)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def atomic_write_bytes(path: str, data: bytes) -> None:
    """Write `data` to `path` through a temporary file in the same directory and a rename."""

    def fill(fd: int, _tmp: str) -> None:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]

    atomic_write(path, fill)


def human_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(n) < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GiB"
