"""Lazy, torch-free reading of a trace directory.

    from tracer import load_trace
    tr = load_trace("traces/paris")
    tr.tokens[-1]["text"]                      # prompt + generated tokens
    step = tr.steps[0]                         # the prefill
    step.names                                 # recorded names, forward order
    step["blocks.3.attn.hook_pattern"]         # numpy array [n_heads, T, S], memory-mapped
    step.token, step.sampling                  # chosen token and the sampler record

Opening reads only manifest.json. A step file's header is read when the step is first used,
its arrays are memory-mapped when asked for. Nothing is ever unpickled.
"""

from __future__ import annotations

import json
import math
import mmap
import os
import struct
from collections.abc import Sequence
from typing import Any

import numpy as np

from .names import forward_order
from .trace_format import MANIFEST, SCHEMA, SCHEMA_VERSION, TraceError

_DTYPES = {
    "F64": np.float64,
    "F32": np.float32,
    "F16": np.float16,
    "I64": np.int64,
    "I32": np.int32,
    "I16": np.int16,
    "I8": np.int8,
    "U8": np.uint8,
    "BOOL": np.bool_,
}
_ITEMSIZE = {k: np.dtype(v).itemsize for k, v in _DTYPES.items()}
_MAX_HEADER = 64 * 1024 * 1024


def read_safetensors_header(path: str) -> tuple[dict, int]:
    """(header dict without __metadata__, byte offset of the data section). Validates offsets."""
    try:
        size = os.path.getsize(path)
        with open(path, "rb") as fh:
            raw = fh.read(8)
            if len(raw) != 8:
                raise TraceError(f"{path}: truncated step file")
            (n,) = struct.unpack("<Q", raw)
            if n > min(size - 8, _MAX_HEADER):
                raise TraceError(f"{path}: corrupted step file (bad header length)")
            header = json.loads(fh.read(n).decode("utf-8"))
    except FileNotFoundError:
        raise TraceError(f"{path}: step file is missing") from None
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise TraceError(f"{path}: corrupted step file (header is not JSON)") from None
    except OSError as exc:
        raise TraceError(f"{path}: cannot read step file ({exc.strerror})") from None
    if not isinstance(header, dict):
        raise TraceError(f"{path}: corrupted step file (header is not an object)")
    header.pop("__metadata__", None)
    data_len = size - 8 - n
    for name, info in header.items():
        try:
            itemsize = _ITEMSIZE[info["dtype"]]
            begin, end = info["data_offsets"]
            count = math.prod(info["shape"])
        except (KeyError, TypeError, ValueError):
            raise TraceError(f"{path}: corrupted step file (bad entry for {name!r})") from None
        if not (0 <= begin <= end <= data_len) or end - begin != count * itemsize:
            raise TraceError(f"{path}: corrupted step file ({name!r} lies outside the file)")
    return header, 8 + n


class Step:
    """One forward pass: step 0 is the prefill over the prompt, step i >= 1 the forward over
    generated token i. Its arrays cover the positions it computed; its sampling record says
    which token it chose."""

    def __init__(self, trace_dir: str, entry: dict):
        self._entry = entry
        self.index: int = entry["index"]
        self.kind: str = entry.get("kind", "prefill" if self.index == 0 else "decode")
        self.path = os.path.join(trace_dir, entry["file"])
        self._header: dict | None = None
        self._names: list[str] | None = None
        self._data_start = 0
        self._map: mmap.mmap | None = None

    # -- metadata (manifest only, no file access) ------------------------------------------
    @property
    def positions(self) -> tuple[int, int]:
        """[start, end) token positions this step computed."""
        start, end = self._entry["positions"]
        return int(start), int(end)

    @property
    def token(self) -> dict:
        """The token this step chose: {"id", "text", "special", "position"}."""
        return self._entry["token"]

    @property
    def sampling(self) -> dict:
        """Sampler record: chosen rank/probabilities, entropy, nucleus size, pipeline stages."""
        return self._entry["sampling"]

    @property
    def nbytes(self) -> int:
        return int(self._entry.get("bytes", 0))

    @property
    def nonfinite(self) -> list[str]:
        """Recorded names holding NaN or inf (from the manifest; no array is read)."""
        return list(self._entry.get("nonfinite") or [])

    @property
    def seconds(self) -> float | None:
        """Wall time of the forward pass and sampling, when recorded."""
        return self._entry.get("seconds")

    # -- arrays ------------------------------------------------------------------------------
    def _load_header(self) -> dict:
        if self._header is None:
            self._header, self._data_start = read_safetensors_header(self.path)
        return self._header

    @property
    def names(self) -> list[str]:
        """Recorded names in forward-pass order."""
        if self._names is None:
            self._names = forward_order(self._load_header())
        return list(self._names)

    def __contains__(self, name: str) -> bool:
        return name in self._load_header()

    def shape(self, name: str) -> tuple[int, ...]:
        return tuple(self._info(name)["shape"])

    def dtype(self, name: str) -> np.dtype:
        return np.dtype(_DTYPES[self._info(name)["dtype"]])

    def _info(self, name: str) -> dict:
        try:
            return self._load_header()[name]
        except KeyError:
            raise KeyError(f"{name!r} was not recorded in step {self.index}") from None

    def __getitem__(self, name: str) -> np.ndarray:
        info = self._info(name)
        if self._map is None:
            try:
                with open(self.path, "rb") as fh:
                    self._map = mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ)
            except (OSError, ValueError) as exc:
                raise TraceError(f"{self.path}: cannot map step file ({exc})") from None
        begin, end = info["data_offsets"]
        dtype = _DTYPES[info["dtype"]]
        count = (end - begin) // _ITEMSIZE[info["dtype"]]
        arr = np.frombuffer(self._map, dtype=dtype, count=count, offset=self._data_start + begin)
        return arr.reshape(info["shape"])

    def get(self, name: str, default: Any = None):
        return self[name] if name in self else default

    def release(self) -> None:
        """Drop the memory map (arrays already handed out stay valid until freed)."""
        self._map = None

    def __repr__(self) -> str:
        return f"<Step {self.index} {self.kind} positions={self.positions} token={self.token.get('text')!r}>"


class StepList(Sequence):
    """The completed steps of a trace; keeps at most `max_open` step files mapped at once."""

    def __init__(self, trace_dir: str, entries: list[dict], max_open: int = 32):
        self._dir = trace_dir
        self._steps = [Step(trace_dir, e) for e in entries]
        self._open: list[Step] = []
        self._max_open = max_open

    def __len__(self) -> int:
        return len(self._steps)

    def __getitem__(self, i):
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(len(self)))]
        step = self._steps[i]
        if step in self._open:
            self._open.remove(step)
        self._open.append(step)
        if len(self._open) > self._max_open:
            self._open.pop(0).release()
        return step

    def _sync(self, entries: list[dict]) -> None:
        """A live session wrote more steps: list them (entries is the manifest's step list)."""
        for entry in entries[len(self._steps) :]:
            self._steps.append(Step(self._dir, entry))


class Trace:
    """A trace directory opened for reading. `steps`, `tokens`, `model`, `manifest`."""

    def __init__(self, path: str, manifest: dict):
        self.path = path
        self.manifest = manifest
        self.steps = StepList(path, manifest.get("steps", []))

    @property
    def model(self) -> dict:
        """Model facts: name, family, n_layers, d_model, n_heads, n_kv_heads, d_head, d_mlp, params, ..."""
        return self.manifest["model"]

    @property
    def tokens(self) -> list[dict]:
        """Prompt tokens then generated tokens: {"id", "text", "special", "position"}."""
        return self.manifest["tokens"]

    @property
    def prompt_len(self) -> int:
        return int(self.manifest["prompt_len"])

    @property
    def generation(self) -> dict:
        return self.manifest["generation"]

    @property
    def finished(self) -> bool:
        return bool(self.manifest.get("finished"))

    @property
    def nbytes(self) -> int:
        return sum(s.nbytes for s in self.steps._steps)

    def add_steps(self, entries: list[dict], tokens: list[dict]) -> None:
        """A live session completed more steps (files on disk): list their entries and chosen
        tokens. Called only by the thread that owns this Trace (the app's UI thread)."""
        self.manifest["steps"].extend(entries)
        self.manifest["tokens"].extend(tokens)
        self.steps._steps.extend(Step(self.path, e) for e in entries)

    def __repr__(self) -> str:
        return f"<Trace {self.path!r} model={self.model.get('name')!r} steps={len(self.steps)}>"


def read_manifest(path: str) -> dict:
    mpath = os.path.join(path, MANIFEST)
    if not os.path.isdir(path):
        raise TraceError(f"{path}: no such trace directory")
    try:
        with open(mpath, encoding="utf-8") as fh:
            manifest = json.load(fh)
    except FileNotFoundError:
        raise TraceError(f"{path}: not a trace (no {MANIFEST})") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise TraceError(f"{mpath}: corrupted manifest ({exc.__class__.__name__}: {exc})") from None
    except OSError as exc:
        raise TraceError(f"{mpath}: cannot read ({exc.strerror})") from None
    if not isinstance(manifest, dict) or manifest.get("schema") != SCHEMA:
        raise TraceError(f"{mpath}: not a stepscope trace manifest")
    version = manifest.get("schema_version")
    if not isinstance(version, int) or version > SCHEMA_VERSION:
        raise TraceError(f"{mpath}: schema version {version!r} is newer than this stepscope reads")
    for key in ("model", "tokens", "steps", "prompt_len", "generation"):
        if key not in manifest:
            raise TraceError(f"{mpath}: corrupted manifest (no {key!r})")
    return manifest


def load_trace(path: str | os.PathLike) -> Trace:
    """Open a trace directory. Reads manifest.json only; checks each listed step file exists
    with the size the manifest recorded (a stat each)."""
    path = os.fspath(path)
    manifest = read_manifest(path)
    for entry in manifest["steps"]:
        fpath = os.path.join(path, entry.get("file", ""))
        try:
            size = os.path.getsize(fpath)
        except OSError:
            raise TraceError(f"{fpath}: step {entry.get('index')} is missing") from None
        if "bytes" in entry and size != entry["bytes"]:
            raise TraceError(
                f"{fpath}: step {entry.get('index')} is corrupted ({size} bytes, manifest says {entry['bytes']})"
            )
    return Trace(path, manifest)
