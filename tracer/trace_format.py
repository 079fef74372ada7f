"""The on-disk trace format: every file name, the dtype table, the checksums (numpy only, no torch).

A trace is a directory (schema 2; docs/TRACE_FORMAT.md):
    manifest.json              schema, model, tokenizer, prompt, settings, prompt tokens
    steps.jsonl                append-only: one JSON step entry per line (O(1) per step)
    step_00000.safetensors     the prefill forward (step 0)
    step_00001.safetensors     the forward over generated token 1, ...
Each step file is written to a temporary name and renamed into place before its line is
appended to steps.jsonl: a trace cut short by Ctrl-C, a crash or a kill always loads up to its
last complete step (a torn last line is ignored). Schema-1 traces (steps inside manifest.json)
still open. Beside them: tokenizer.json (decoding without transformers), lens.safetensors (the
logit lens' weights, tracer/lens.py) and branches/<name>/, each branch a trace of its own
(tracer/branch_layout.py).

Integrity: manifest.json and every steps.jsonl line end with a crc32 of their own bytes,
`{...,"crc":"xxxxxxxx"}` (stamp/unstamp below), like each step file's entry checksum: accidental
damage to any file of a trace is detected on open. A checksum is no signature: whoever edits a
file on purpose can re-stamp it.
"""

from __future__ import annotations

import json
import os
import re
import struct
import tempfile
import zlib
from collections.abc import Iterable

import numpy as np

SCHEMA = "stepscope.trace"
SCHEMA_VERSION = 2
READABLE_VERSIONS = (1, 2)
MANIFEST_PAD = 512  # trailing spaces: room to rewrite the manifest in place on a full disk

# -- file names ------------------------------------------------------------------------------------
MANIFEST = "manifest.json"
STEP_LOG = "steps.jsonl"
TOKENIZER_FILE = "tokenizer.json"  # the tokenizer, for the `tokenizers` library
LENS_FILE = "lens.safetensors"  # final norm, unembedding (and W_O) for the reader's logit lens
FIXED_FILES = frozenset({MANIFEST, STEP_LOG, TOKENIZER_FILE, LENS_FILE})
SIDE_FILES = (TOKENIZER_FILE, LENS_FILE)  # optional files a copy of a trace takes along
STEP_FILE = re.compile(r"step_\d{5,9}\.safetensors\Z")
BRANCHES_DIR = "branches"  # <trace>/branches/<name>/: a branch, itself a trace
TEMP_PREFIX = ".tmp-"  # a file being written (renamed into place when complete)


def _file_mode() -> int:
    """0o666 less the process umask: the mode an ordinary open() would give a new file."""
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


FILE_MODE = _file_mode()


class TraceError(Exception):
    """A trace cannot be read: missing, corrupted or of an unknown schema. One clear line."""


class TraceWriteError(TraceError):
    """A trace cannot be written (unwritable directory, full disk)."""


_STAMP_HEAD = b',"crc":"'
_STAMP_LEN = len(_STAMP_HEAD) + 10  # ,"crc":"xxxxxxxx"}
STAMP_HEAD, STAMP_TAIL = _STAMP_HEAD, _STAMP_LEN  # what a stamp starts with, and its length (checking lines in bulk)
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


_STEP_FILE_FORMAT = "step_{:05d}.safetensors"


def step_filename(index: int) -> str:
    return _STEP_FILE_FORMAT.format(index)


def step_filenames(indices: Iterable[int]) -> list[str]:
    """step_filename of each index."""
    return list(map(_STEP_FILE_FORMAT.format, indices))


# -- step files: safetensors dtypes and checksums ----------------------------------------------------
BF16 = np.dtype([("bfloat16", "<u2")])  # numpy has no bfloat16: the writing side holds its raw bits in this stand-in
DTYPES: dict[str, np.dtype] = {
    "F64": np.dtype(np.float64),
    "F32": np.dtype(np.float32),
    "F16": np.dtype(np.float16),
    "BF16": BF16,
    "I64": np.dtype(np.int64),
    "I32": np.dtype(np.int32),
    "I16": np.dtype(np.int16),
    "I8": np.dtype(np.int8),
    "U8": np.dtype(np.uint8),
    "BOOL": np.dtype(np.bool_),
}  # safetensors code -> numpy dtype (the codes a trace may hold)
ITEMSIZE = {code: dtype.itemsize for code, dtype in DTYPES.items()}
DTYPE_CODES = {dtype: code for code, dtype in DTYPES.items()}  # numpy dtype -> safetensors code
VALUE_DTYPES = {**DTYPES, "BF16": np.dtype(np.float32)}  # safetensors code -> the dtype a reader returns
STORED_ITEMSIZE = {"float32": 4, "float16": 2, "bfloat16": 2, "float64": 8}  # manifest dtype.stored -> bytes per value


def from_buffer(buf, code: str, count: int, offset: int) -> np.ndarray:
    """The `count` values of safetensors dtype `code` at byte `offset` of `buf`: a view of the
    buffer, except bfloat16, which is widened to a new float32 array (its bits are a float32's
    upper half)."""
    if code == "BF16":
        bits = np.frombuffer(buf, dtype=np.uint16, count=count, offset=offset)
        return (bits.astype(np.uint32) << 16).view(np.float32)
    return np.frombuffer(buf, dtype=DTYPES[code], count=count, offset=offset)


def widen(a: np.ndarray) -> np.ndarray:
    """`a` as floats a reader would return: a BF16 array's bits widened to float32, anything else as is."""
    if a.dtype == BF16:
        return (np.ascontiguousarray(a).view(np.uint16).astype(np.uint32) << 16).view(np.float32)
    return a
CRC_KEY = "stepscope.crc32"  # __metadata__: each stored tensor's crc32, 8 hex digits each, in file order


def step_checksum(prefix: bytes | memoryview, crcs) -> str:
    """A step entry's checksum: crc32 over the file's length+header bytes then each stored
    tensor's crc32 (4 bytes little-endian) in file order."""
    return f"crc32:{zlib.crc32(struct.pack(f'<{len(crcs)}I', *crcs), zlib.crc32(prefix)):08x}"


def crc_list(crcs) -> str:
    """The CRC_KEY metadata value: the tensors' crc32s as 8 hex digits each."""
    return struct.pack(f">{len(crcs)}I", *crcs).hex()


def parse_crc_list(text: str, count: int) -> list[int] | None:
    """The crc32s of a CRC_KEY value listing `count` tensors; None when it is malformed."""
    if len(text) != 8 * count or any(c not in "0123456789abcdef" for c in text):
        return None
    return [int(text[8 * i : 8 * i + 8], 16) for i in range(count)]


def atomic_write(path: str, fill) -> None:
    """Create `path` whole or not at all: `fill(fd, tmp)` writes a temporary file in the same
    directory (fd open for reading and writing, closed afterwards), which is then renamed."""
    fd, tmp = tempfile.mkstemp(prefix=TEMP_PREFIX, dir=os.path.dirname(os.path.abspath(path)))
    try:
        try:
            fill(fd, tmp)
        finally:
            os.close(fd)
        os.chmod(tmp, FILE_MODE)
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
