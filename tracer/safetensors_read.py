"""Safetensors files read with numpy only, under the reader's rules (safetensors' own numpy loader
knows no bfloat16): the header checks every reader of a trace applies, and a whole file's arrays
with bfloat16 widened to float32 (tracer/trace_format.py)."""

from __future__ import annotations

import math
import os
import struct

import numpy as np

from .schema import parse_json
from .trace_format import ITEMSIZE, TraceError, from_buffer

_MAX_HEADER = 100_000_000  # safetensors' own limit
_MAX_TENSORS = 100_000


def parse_safetensors_header(prefix8: bytes, read_header, file_size: int, label: str, meta_out: dict | None = None) -> tuple[dict, int]:
    """(tensor table, data start) under safetensors' rules (`meta_out` receives "meta", the
    __metadata__ map, and "raw", the header bytes): header length within the file and
    8-byte aligned, JSON object, known dtypes, non-negative integer shapes and offsets, tensors
    contiguous from 0 without gap or overlap, each exactly its shape's bytes, data ending at EOF."""
    if len(prefix8) != 8:
        raise TraceError(f"{label}: truncated step file")
    (n,) = struct.unpack("<Q", prefix8)
    if n > _MAX_HEADER or n > file_size - 8 or n % 8:
        raise TraceError(f"{label}: corrupted step file (bad header length)")
    raw = read_header(n)
    if len(raw) != n or not raw.startswith(b"{"):
        raise TraceError(f"{label}: corrupted step file (header is not a JSON object)")
    try:
        header = parse_json(raw, label)
    except TraceError:
        raise TraceError(f"{label}: corrupted step file (header is not JSON)") from None
    if type(header) is not dict:
        raise TraceError(f"{label}: corrupted step file (header is not an object)")
    meta = header.pop("__metadata__", None)
    if meta is not None and (type(meta) is not dict or any(type(v) is not str for v in meta.values())):
        raise TraceError(f"{label}: corrupted step file (bad __metadata__)")
    if meta_out is not None:
        meta_out.update(meta=meta or {}, raw=raw)
    if len(header) > _MAX_TENSORS:
        raise TraceError(f"{label}: corrupted step file (too many tensors)")
    spans = []
    for name, info in header.items():
        bad = TraceError(f"{label}: corrupted step file (bad entry for {name[:60]!r})")
        if type(info) is not dict or set(info) != {"dtype", "shape", "data_offsets"} or len(name) > 200:
            raise bad
        dtype, shape, offsets = info["dtype"], info["shape"], info["data_offsets"]
        if type(dtype) is not str or dtype not in ITEMSIZE or type(shape) is not list or type(offsets) is not list or len(offsets) != 2:
            raise bad
        if len(shape) > 8 or any(type(d) is not int or d < 0 for d in shape):
            raise bad
        if any(type(o) is not int or o < 0 for o in offsets):
            raise bad
        count = math.prod(shape)
        begin, end = offsets
        if end < begin or end - begin != count * ITEMSIZE[dtype]:
            raise bad
        spans.append((begin, end, name))
    spans.sort()
    cursor = 0
    for begin, end, name in spans:
        if begin != cursor:
            raise TraceError(f"{label}: corrupted step file ({name[:60]!r} overlaps or leaves a gap)")
        cursor = end
    if 8 + n + cursor != file_size:
        raise TraceError(f"{label}: corrupted step file (data does not end at the end of the file)")
    return header, 8 + n


def read_safetensors_header(path: str) -> tuple[dict, int]:
    """(tensor table, data start) of a safetensors file given by path (trusted callers, tests)."""
    with open(path, "rb") as fh:
        size = os.fstat(fh.fileno()).st_size
        return parse_safetensors_header(fh.read(8), fh.read, size, path)


def header_arrays(raw, header: dict, start: int) -> dict[str, np.ndarray]:
    """{name: array} of the tensors a parsed header lists in `raw`, the whole file's bytes (views,
    except bfloat16: widened to new float32 arrays)."""
    out = {}
    for key, info in header.items():
        b, e = info["data_offsets"]
        out[key] = from_buffer(raw, info["dtype"], (e - b) // ITEMSIZE[info["dtype"]], start + b).reshape(info["shape"])
    return out


def safetensors_arrays(raw: bytes, label: str) -> dict[str, np.ndarray]:
    """{name: array} of a whole safetensors file's bytes; TraceError naming `label` when malformed."""
    header, start = parse_safetensors_header(raw[:8], lambda n: raw[8 : 8 + n], len(raw), label)
    return header_arrays(raw, header, start)


def load_safetensors_file(path: str) -> dict[str, np.ndarray]:
    """{name: array} of the safetensors file at `path` (a trusted path: read whole)."""
    with open(path, "rb") as fh:
        return safetensors_arrays(fh.read(), path)
