"""Lazy, torch-free reading of a trace directory, which is untrusted input.

    from stepscope.tracer import load_trace
    tr = load_trace("traces/paris")
    tr.tokens[-1]["text"]                      # prompt + generated tokens
    step = tr.steps[0]                         # the prefill
    step.names                                 # recorded names, forward order (aliases included)
    step["blocks.3.attn.hook_pattern"]         # numpy array [n_heads, T, S], memory-mapped
    step.token, step.sampling                  # chosen token and the sampler record
    step.attention_rows(3, "pattern", 0, 8)    # rows of a map, recomputed where the budget omitted them

Opening reads manifest.json and steps.jsonl (schema 2) or manifest.json alone (schema 1), both
validated against tracer/schema.py; in schema 2 the manifest and each log line carry a crc32 of
their own bytes, checked then. A step file's header is read when the step is first used,
checked with safetensors' own rules, its arrays are memory-mapped when asked for and its
checksum verified then. Files are opened only inside the directory (tracer/safe_io.py).
Nothing is ever unpickled.
"""

from __future__ import annotations

import functools
import gc
import io
import json
import mmap
import os
import stat
import zlib
from collections.abc import Callable, MutableSequence, Sequence
from itertools import chain, repeat
from operator import attrgetter, itemgetter, ne
from types import GenericAlias
from typing import Any

import msgspec
import numpy as np

from .attention_rows import rows as attention_map_rows
from .branch_layout import branch_field, parent_dir, root_dir, shared_steps, step_dirs
from .consistency import StepRules, check_lens, check_trace
from .inert import inert, inert_entry, inert_manifest, inert_value
from .lens import LogitLens
from .names import O_INPUT, RESULT, forward_order
from .safe_io import open_dir, open_in_dir, read_in_dir, read_trace_file, stat_in_dir
from .safetensors_read import header_arrays, parse_safetensors_header
from .schema import (
    CHECKSUM,
    MAX_LIST,
    MAX_LOG_BYTES,
    MAX_LOG_LINE,
    MAX_MANIFEST_BYTES,
    MAX_POSITIONS,
    MAX_STEP_BYTES,
    SAMPLING_INT_KEYS,
    SAMPLING_RANGES,
    parse_json,
    validate_entry,
    validate_manifest,
    want_list,
)
from .trace_format import (
    CRC_KEY,
    ITEMSIZE,
    LENS_FILE,
    MANIFEST,
    STAMP_ANYWHERE,
    STAMP_HEAD,
    STAMP_TAIL,
    STEP_FILE,
    STEP_LOG,
    VALUE_DTYPES,
    TraceError,
    from_buffer,
    parse_crc_list,
    step_checksum,
    step_filename,
    step_filenames,
    unstamp,
)

LENS_NAMES = ("logit_lens.ids", "logit_lens.probs")  # computed by the trace's lens when not stored
def inert_names(names: dict[str, str], label: str) -> dict[str, str]:
    """{exposed name made inert (tracer/inert.py): stored name}; two names alike once inert are refused."""
    if all(n.isascii() and n.isprintable() for n in names):
        return names
    out = {inert(n, None): stored for n, stored in names.items()}
    if len(out) != len(names):
        raise TraceError(f"{label}: corrupted step file (two tensor names differ only in control characters)")
    return out


def _v1_names(header: dict) -> dict[str, str]:
    """Schema 1 stored the norm MODULE output under *.hook_normalized: exposed as *.hook_out."""
    return {(n[: -len("hook_normalized")] + "hook_out" if n.endswith(".hook_normalized") else n): n for n in header}


class Step:
    """One forward pass: step 0 is the prefill over the prompt, step i >= 1 the forward over
    generated token i. Its arrays cover the positions it computed; its sampling record says
    which token it chose."""

    __slots__ = ("_entry", "_lens", "_lens_arrays", "_derived_names", "_derived_values", "_dir", "_facts", "_version",
                 "index", "kind", "_header", "_names", "_data_start", "_size", "_map", "_verified", "_crcs", "_checked", "_rules")

    def __init__(self, trace_dir: str, entry: dict, facts: dict | None = None, version: int = 2, lens=None,
                 rules: StepRules | None = None):
        # a trace may list hundreds of thousands of steps: slots, and containers made on first use
        self._entry = entry
        self._rules = rules if rules is not None else StepRules(facts) if facts is not None else None
        self._lens = lens  # () -> LogitLens | None: the lazy logit lens of the trace (tracer/lens.py)
        self._lens_arrays: dict | None = None
        self._derived_names: dict | None = None  # name -> () -> array, for names the reader computes
        self._derived_values: dict[str, np.ndarray] | None = None
        self._dir = trace_dir
        self._facts = facts
        self._version = version
        self.index: int = entry["index"]
        self.kind: str = entry.get("kind", "prefill" if self.index == 0 else "decode")
        self._header: dict | None = None  # exposed name -> safetensors entry (aliases included)
        self._names: list[str] | None = None
        self._data_start = 0
        self._size = 0
        self._map: mmap.mmap | None = None
        self._verified = False
        self._crcs: dict[tuple, int] | None = None  # data span -> crc32, when the file lists them
        self._checked: set[tuple] | None = None

    @property
    def path(self) -> str:
        """The step file's path."""
        return os.path.join(self._dir, self._entry["file"])

    # -- metadata (manifest only, no file access) ------------------------------------------
    @property
    def entry(self) -> dict:
        """The step's manifest entry (steps.jsonl line), as validated on open; not to be modified."""
        return self._entry

    @property
    def facts(self) -> dict | None:
        """The trace's model facts (manifest `model`) the step's arrays were checked against."""
        return self._facts

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

    @property
    def aliases(self) -> dict[str, str]:
        """{name: stored name}: arrays stored once under another name with identical bytes."""
        return dict(self._entry.get("aliases") or {})

    @property
    def intervened(self) -> list[str]:
        """Recorded names an intervention edited in this step (a branch's steps; tracer/interventions.py)."""
        names = self._entry.get("intervened")
        return [n for n in names if type(n) is str] if type(names) is list else []

    @property
    def forced(self) -> bool:
        """The token was forced (a branch's step), not chosen by the sampler."""
        return self._entry.get("forced") is True

    @property
    def omitted(self) -> dict[str, dict]:
        """{name: {"rows": [r0, r1], "reason", "recompute"}}: query rows not stored (budget)."""
        return dict(self._entry.get("omitted") or {})

    # -- arrays ------------------------------------------------------------------------------
    def _label(self) -> str:
        return f"step {self.index} ({self._entry['file']})"

    def _open(self) -> tuple[int, int]:
        dir_fd = open_dir(self._dir)
        try:
            return open_in_dir(dir_fd, self._entry["file"], MAX_STEP_BYTES, self._label())
        except FileNotFoundError:
            raise TraceError(f"{self._label()}: step file is missing") from None
        finally:
            os.close(dir_fd)

    def _load_header(self) -> dict:
        if self._header is None:
            fd, size = self._open()
            try:
                with os.fdopen(fd, "rb", closefd=False) as fh:
                    extra: dict = {}
                    prefix8 = fh.read(8)
                    table, self._data_start = parse_safetensors_header(prefix8, fh.read, size, self._label(), extra)
                    self._crcs = self._tensor_crcs(table, extra["meta"], prefix8 + extra["raw"])
            except OSError as exc:
                raise TraceError(f"{self._label()}: cannot read step file ({exc.strerror})") from None
            finally:
                os.close(fd)
            names = _v1_names(table) if self._version < 2 else {n: n for n in table}
            names = inert_names(names, self._label())
            header = {exposed: table[stored] for exposed, stored in names.items()}
            if self._rules is not None:
                self._rules.check_header(header, self._entry, self._label(), self.aliases)
            for alias, target in self.aliases.items():
                if alias in header or target not in table:
                    raise TraceError(f"{self._label()}: alias {alias[:60]!r} names no stored array")
                header[alias] = table[target]
            self._size, self._header = size, header
        return self._header

    @property
    def names(self) -> list[str]:
        """Recorded names in forward-pass order (aliases and the names the reader computes included)."""
        if self._names is None:
            self._names = forward_order([*self._load_header(), *self._derived()])
        return list(self._names)

    def __contains__(self, name: str) -> bool:
        return name in self._load_header() or name in self._derived()

    def _derived(self) -> dict[str, Callable[[], np.ndarray]]:
        """Names not in the file that the reader computes exactly from what is: the logit lens (from
        the residual rows and the lens file), `attn.hook_result` (from `attn.hook_o_input` and W_O)
        and `P.hook_normalized` (the norm's recorded input / `P.hook_scale`, manifest `norm_inputs`)."""
        if self._derived_names is None:
            header = self._load_header()
            lens = self._lens() if self._lens is not None else None
            out: dict[str, Callable[[], np.ndarray]] = {}
            if lens is not None:  # (the norms below need no lens)
                if lens.has_rows(header):
                    out.update({n: functools.partial(self._lens_value, n) for n in LENS_NAMES if n not in header})
                for layer in lens.w_o:
                    name, source = f"blocks.{layer}.{RESULT}", f"blocks.{layer}.{O_INPUT}"
                    if name not in header and source in header and tuple(header[source]["shape"]) == lens.w_o[layer].shape[:2]:
                        out[name] = functools.partial(self._head_result, lens, layer, source)
            norms = (self._facts or {}).get("norm_inputs") or {}
            for prefix, spec in norms.items():
                name, source, scale = prefix + ".hook_normalized", spec["input"], prefix + ".hook_scale"
                if name not in header and source in header and scale in header:
                    out[name] = functools.partial(self._normalized, source, scale, spec["kind"])
            self._derived_names = out
        return self._derived_names

    def _normalized(self, source: str, scale: str, kind: str) -> np.ndarray:
        """TransformerLens's hook_normalized: the norm's input (centred for LayerNorm) / hook_scale, float32."""
        x = np.asarray(self[source], dtype=np.float32)
        if kind == "layernorm":
            x = x - x.mean(-1, keepdims=True, dtype=np.float32)
        s = np.asarray(self[scale], dtype=np.float32)
        if x.shape[:-1] != s.shape[:-1]:
            raise TraceError(f"{self._label()}: {source[:60]!r} and {scale[:60]!r} disagree in shape")
        return x / s

    def _head_result(self, lens, layer: int, source: str) -> np.ndarray:
        return lens.head_result(layer, self[source])

    def _derived_value(self, name: str) -> np.ndarray:
        if self._derived_values is None:
            self._derived_values = {}
        value = self._derived_values.get(name)
        if value is None:
            compute = self._derived()[name]
            value = self._derived_values[name] = compute()
        return value

    def _lens_value(self, name: str) -> np.ndarray:
        if self._lens_arrays is None:
            self._lens_arrays = self._lens().for_step(self)  # [n_layers, k] ids and probs
        return self._lens_arrays[name]

    def shape(self, name: str) -> tuple[int, ...]:
        if name not in self._load_header() and name in self._derived():
            return tuple(self._derived_value(name).shape)
        return tuple(self._info(name)["shape"])

    def dtype(self, name: str) -> np.dtype:
        if name not in self._load_header() and name in self._derived():
            return self._derived_value(name).dtype
        return VALUE_DTYPES[self._info(name)["dtype"]]

    def _info(self, name: str) -> dict:
        try:
            return self._load_header()[name]
        except KeyError:
            raise KeyError(f"{name!r} was not recorded in step {self.index}") from None

    def _mapped(self) -> mmap.mmap:
        if self._map is None:
            self._load_header()
            fd, size = self._open()
            try:
                if size != self._size:
                    raise TraceError(f"{self._label()}: step file changed while open")
                self._map = mmap.mmap(fd, 0, access=mmap.ACCESS_READ) if size else mmap.mmap(-1, 1)
            except (OSError, ValueError) as exc:
                raise TraceError(f"{self._label()}: cannot map step file ({exc})") from None
            finally:
                os.close(fd)
            if not self._verified:
                self._verify(self._map)
        return self._map

    def _tensor_crcs(self, table: dict, meta: dict, prefix: bytes) -> dict | None:
        """Per-tensor crc32s from __metadata__, checked against the entry's checksum (header only);
        None when the file has none (then the whole file is verified on first read)."""
        want = self._entry.get("checksum")
        listed = meta.get(CRC_KEY)
        if want is None or listed is None:
            return None
        spans = sorted(tuple(info["data_offsets"]) for info in table.values())
        crcs = parse_crc_list(listed, len(spans))
        if crcs is None:
            raise TraceError(f"{self._label()}: corrupted step file (bad checksum list)")
        if step_checksum(prefix, crcs) != want:
            raise TraceError(f"{self._label()}: checksum mismatch (the step file was modified or damaged)")
        self._verified = True  # the header is verified; each tensor is checked on its first read
        return dict(zip(spans, crcs))

    def _check_tensor(self, buf, begin: int, end: int) -> None:
        span = (begin, end)
        if self._checked is None:
            self._checked = set()
        if span in self._checked:
            return
        with memoryview(buf) as view:
            crc = zlib.crc32(view[self._data_start + begin : self._data_start + end])
        assert self._crcs is not None  # tensors are checked only when the file lists their crcs
        if crc != self._crcs.get(span):
            raise TraceError(f"{self._label()}: checksum mismatch (the step file was modified or damaged)")
        self._checked.add(span)

    def _verify(self, buf) -> None:
        """The entry's checksum against the file (once, on the first array read)."""
        want = self._entry.get("checksum")
        if want is not None:
            view = memoryview(buf)
            assert self._header is not None  # loaded before the file is mapped
            spans = sorted(tuple(info["data_offsets"]) for name, info in self._header.items() if name not in self.aliases)
            crcs = [zlib.crc32(view[self._data_start + b : self._data_start + e]) for b, e in spans]
            got = step_checksum(view[: self._data_start], crcs)
            view.release()
            if got != want:
                self._map = None
                raise TraceError(f"{self._label()}: checksum mismatch (the step file was modified or damaged)")
        self._verified = True

    def __getitem__(self, name: str) -> np.ndarray:
        if name not in self._load_header() and name in self._derived():
            return self._derived_value(name)
        info = self._info(name)
        buf = self._mapped()
        begin, end = info["data_offsets"]
        if self._crcs is not None:
            self._check_tensor(buf, begin, end)
        count = (end - begin) // ITEMSIZE[info["dtype"]]
        arr = from_buffer(buf, info["dtype"], count, self._data_start + begin)
        if arr.dtype.kind in "iu" and self._rules is not None:
            self._rules.check_ids(name, arr, self._label())
        return arr.reshape(info["shape"])

    def get(self, name: str, default: Any = None):
        return self[name] if name in self else default

    def attention_rows(self, layer: int, kind: str, q0: int, q1: int) -> np.ndarray:
        """Rows q0..q1 of layer's attention map ("pattern" or "scores") [n_heads, q1-q0, S]:
        stored rows from the file, rows the budget omitted recomputed from hook_rot_q/hook_rot_k."""
        return attention_map_rows(self, layer, kind, q0, q1)

    def release(self) -> None:
        """Drop the memory map (arrays already handed out stay valid until freed)."""
        self._map = None
        self._lens_arrays = None
        self._derived_values = None

    def __repr__(self) -> str:
        return f"<Step {self.index} {self.kind} positions={self.positions} token={self.token.get('text')!r}>"


class StepList(Sequence):
    """The completed steps of a trace; keeps at most `max_open` step files mapped at once."""

    def __init__(self, trace_dir: str, entries: list[dict], max_open: int = 32, facts: dict | None = None, version: int = 2,
                 lens=None, dirs: list[str] | None = None, rules: StepRules | None = None):
        self._dir = trace_dir
        self._rules = rules
        self._facts = facts
        self._version = version
        self._lens = lens
        self._dirs = dirs or []  # a branch's first steps live in its parents' directories (tracer/branch_layout.py)
        # a trace opened from disk shares its step table (no copy of hundreds of thousands of entries)
        self._entries: Sequence[dict] = entries if isinstance(entries, StepTable) else list(entries)
        self._count = len(self._entries)
        self._steps: list[Step | None] = [None] * self._count  # each made on first use
        self._open: list[Step] = []
        self._max_open = max_open

    def _new_step(self, entry: dict) -> Step:
        index = entry["index"]
        trace_dir = self._dirs[index] if 0 <= index < len(self._dirs) else self._dir
        return Step(trace_dir, entry, self._facts, self._version, self._lens, self._rules)

    def __len__(self) -> int:
        return self._count

    def __getitem__(self, i):
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(len(self)))]
        if i < 0:
            i += self._count
        if not 0 <= i < self._count:
            raise IndexError("step index out of range")
        step = self._steps[i]
        if step is None:
            step = self._steps[i] = self._new_step(self._entries[i])
        if step in self._open:
            self._open.remove(step)
        self._open.append(step)
        if len(self._open) > self._max_open:
            self._open.pop(0).release()
        return step

    @property
    def entries(self) -> list[dict]:
        """Every listed step's manifest entry, in order (no step file is opened)."""
        return list(self._entries[: self._count])

    @property
    def files(self) -> dict[str, str]:
        """{step file name: its path}: where each listed step's file lives (a parent's directory
        for a branch's shared steps)."""
        dirs = self._dirs
        return {e["file"]: os.path.join(dirs[e["index"]] if 0 <= e["index"] < len(dirs) else self._dir, e["file"])
                for e in self.entries}

    @property
    def nbytes(self) -> int:
        """Bytes of every listed step file (from the entries)."""
        if isinstance(self._entries, StepTable) and self._count == len(self._entries):
            return self._entries.nbytes
        return sum(int(e.get("bytes", 0)) for e in self.entries)

    def fresh(self, entry: dict) -> Step:
        """A new Step over the file of manifest `entry` (one of this trace's steps), sharing nothing
        with this list: safe to build and read in a worker thread; drop it after use."""
        return self._new_step(entry)

    def sync(self, entries: Sequence[dict]) -> None:
        """A live session wrote more steps: list them (entries is the manifest's step list)."""
        new = entries[self._count :]
        if entries is not self._entries:
            self._entries.extend(new)  # type: ignore[attr-defined]  # a list of its own
        self._steps.extend([None] * len(new))
        self._count += len(new)


class Trace:
    """A trace directory opened for reading. `steps`, `tokens`, `model`, `manifest`.
    `manifest` is schema-1 shaped in memory whatever the version on disk: it holds "steps"
    (every step entry) and "tokens" (prompt then generated tokens)."""

    def __init__(self, path: str, manifest: dict):
        self.path = path
        self.manifest = manifest
        version = manifest.get("schema_version", 2)
        self._lens_facts = (manifest.get("model") or {}).get("lens")
        self._lens = None
        self.root, dirs = path, None  # root: the trace a branch belongs to (lens.safetensors lives there)
        if manifest.get("branch") is not None:
            self.root, dirs = root_dir(path, manifest), step_dirs(path, manifest)
        self.steps = StepList(path, manifest.get("steps", []), facts=manifest.get("model"), version=version, lens=self.lens, dirs=dirs,
                              rules=StepRules.of(manifest))

    def lens(self):
        """The trace's lazy logit lens (tracer/lens.py) or None; lens.safetensors read once, safely."""
        if self._lens is None and self._lens_facts:
            self._lens = LogitLens.open(self.path, self._lens_facts, read=self._lens_arrays)
        return self._lens

    def _lens_arrays(self, _path: str) -> dict[str, np.ndarray]:
        """lens.safetensors' arrays, checked against the manifest's checksum (when it lists one) and the model facts."""
        arrays = read_side_safetensors(self.root, LENS_FILE, checksum=(self._lens_facts or {}).get("checksum"))
        check_lens(arrays, self.model, LENS_FILE)
        return arrays

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
        return self.steps.nbytes

    def add_steps(self, entries: list[dict], tokens: list[dict], model: dict | None = None) -> None:
        """A live session completed more steps (files on disk): list their entries and chosen
        tokens, and take `model` facts it learned meanwhile (`norm_inputs`), so the steps read like
        those of a trace opened from disk. Called only by the thread that owns this Trace (the
        app's UI thread)."""
        if model:
            self.manifest["model"].update(model)  # in place: the steps share this dict
        self.manifest["steps"].extend(entries)
        self.manifest["tokens"].extend(tokens)
        self.steps.sync(self.manifest["steps"])

    def __repr__(self) -> str:
        return f"<Trace {self.path!r} model={self.model.get('name')!r} steps={len(self.steps)}>"


def read_side_safetensors(trace_dir: str, name: str, max_bytes: int = 1 << 34, checksum: str | None = None) -> dict[str, np.ndarray]:
    """{name: array} of a trace's side safetensors file (lens.safetensors), under the reader's rules;
    `checksum`: the manifest's, computed like a step file's (step_checksum), verified over the whole file."""
    try:
        raw = read_trace_file(trace_dir, name, max_bytes)
    except FileNotFoundError:
        raise TraceError(f"{trace_dir}: {name} is missing") from None
    header, start = parse_safetensors_header(raw[:8], lambda n: raw[8 : 8 + n], len(raw), name)
    if checksum is not None:
        with memoryview(raw) as view:
            spans = sorted(tuple(info["data_offsets"]) for info in header.values())
            got = step_checksum(view[:start], [zlib.crc32(view[start + b : start + e]) for b, e in spans])
        if got != checksum:
            raise TraceError(f"{name}: checksum mismatch (the file was modified or damaged)")
    return header_arrays(raw, header, start)


# -- the step log, held as columns -------------------------------------------------------------------
# A long trace lists hundreds of thousands of steps whose entries differ only in their numbers: they are
# checked a column at a time and kept as numpy columns; an entry is made again (a dict) when asked for.
_NONE = type(None)
_TOP_TYPES = {"index": (int,), "kind": (str,), "positions": (list,), "token": (dict,), "sampling": (dict,), "file": (str,),
              "bytes": (int,), "checksum": (str,), "seconds": (int, float, _NONE), "nonfinite": (list,), "aliases": (dict,)}
_TOKEN_TYPES = {"id": (int,), "text": (str,), "piece": (str,), "special": (bool, _NONE), "position": (int, _NONE)}
_SAMPLING_TYPES = {**{k: (float, int, _NONE) for k in SAMPLING_RANGES}, **{k: (int, _NONE) for k in SAMPLING_INT_KEYS},
                   "greedy": (bool, _NONE), "stages": (list,)}
_NUMPY = {int: np.int64, float: np.float64, bool: np.bool_}
_INT_LIMITS = {"index": (0, MAX_LIST), "bytes": (0, MAX_STEP_BYTES), "id": (0, 1 << 31), "position": (0, MAX_POSITIONS),
               **{k: (0, 1 << 31) for k in SAMPLING_INT_KEYS}}
_FLOAT_LIMITS = {"seconds": (0.0, 1e9), **SAMPLING_RANGES}


def _groups(keys: list) -> dict:
    """{key: [positions holding it]}, in order of first appearance (one key: one comparison pass)."""
    if keys and keys.count(keys[0]) == len(keys):
        return {keys[0]: list(range(len(keys)))}
    out: dict = {}
    for i, k in enumerate(keys):
        out.setdefault(k, []).append(i)
    return out


def _column_kinds(columns: dict[str, list]) -> tuple | None:
    """The one type of each column's values, None when a column's values differ in type."""
    out = []
    for values in columns.values():
        kinds = set(map(type, values))
        if len(kinds) != 1:
            return None
        out.append(kinds.pop())
    return tuple(out)


def _take(dicts: list[dict], keys: tuple) -> dict[Any, list]:
    """{key: [each dict's value of it]} (every dict holds every key): one lookup of all the keys per
    dict, then the rows turned into columns."""
    if len(keys) < 2:
        return {k: list(map(itemgetter(k), dicts)) for k in keys}
    return dict(zip(keys, map(list, zip(*map(itemgetter(*keys), dicts)))))


def _attrs(structs: list, keys: tuple) -> dict[Any, list]:
    """{key: [each struct's field of that name]} (a pass per field: quicker than _take's way for structs)."""
    return {k: list(map(attrgetter(k), structs)) for k in keys}


def _typed_groups(batch: list[dict], rows: list[int]) -> list[tuple[tuple, list[int], dict | None]]:
    """[((keys, types of their values), rows, their columns or None)]: the entries grouped by their
    keys (in order) and the types of their values."""
    out: list[tuple[tuple, list[int], dict | None]] = []
    for keys, js in _groups(list(map(tuple, batch))).items():
        ents = [batch[j] for j in js] if len(js) < len(batch) else batch
        columns = _take(ents, keys)
        kinds = _column_kinds(columns)
        if kinds is not None:
            out.append(((keys, kinds), [rows[j] for j in js], columns))
            continue
        for kinds, ks in _groups(list(map(tuple, map(map, repeat(type), map(dict.values, ents))))).items():
            out.append(((keys, kinds), [rows[js[k]] for k in ks], None))
    return out


def _plain(keys: tuple, kinds: tuple, allowed: dict) -> bool:
    return all(kind in allowed.get(key, ()) for key, kind in zip(keys, kinds))


def _plain_top(top: tuple, version: int) -> bool:
    """Whether entries of these keys and value types are of the kind the step table holds as columns."""
    keys = top[0]
    return (_plain(keys, top[1], _TOP_TYPES) and "token" in keys and "sampling" in keys and {"index", "positions", "file"} <= set(keys)
            and (version < 2 or "checksum" in keys))


_LEAVES = {int: int, float: float, str: str, bool: bool, _NONE: None}
# containers that repeat from entry to entry: kept as their bytes (parsed once per run of equal ones)
_CONTAINERS = {"positions": list[int], "nonfinite": msgspec.Raw, "aliases": msgspec.Raw, "stages": msgspec.Raw}
_RAW = (("top", "nonfinite"), ("top", "aliases"), ("sampling", "stages"))


class _StructSchema:
    """The shape of one plain entry (its keys in order, the type of each value) as msgspec structs:
    a batch of lines decoded by it and encoded again to the same bytes holds entries of exactly that
    shape, each equal to what the JSON parser makes of its line; decoding makes no dict per entry."""

    def __init__(self, decoder: msgspec.json.Decoder, sig: tuple):
        self.decoder, self.encoder, self.sig = decoder, msgspec.json.Encoder(), sig

    @classmethod
    def of(cls, e: dict, version: int) -> _StructSchema | None:
        """The schema of entries shaped like `e`; None unless the step table holds such entries as columns."""
        top = (tuple(e), tuple(map(type, e.values())))
        if not _plain_top(top, version):
            return None
        token, sampling = e["token"], e["sampling"]
        sig = (top, tuple(token), tuple(map(type, token.values())), tuple(sampling), tuple(map(type, sampling.values())))
        if not (type(token) is dict and type(sampling) is dict and "id" in sig[1] and "text" in sig[1]
                and _plain(sig[1], sig[2], _TOKEN_TYPES) and _plain(sig[3], sig[4], _SAMPLING_TYPES)):
            return None

        def struct(name: str, d: dict, nested: dict) -> type:  # (plain: containers only under the keys _CONTAINERS names)
            fields = [(key, nested.get(key) or _CONTAINERS.get(key) or _LEAVES[type(value)]) for key, value in d.items()]
            return msgspec.defstruct(name, fields, forbid_unknown_fields=True, gc=False)

        nested = {"token": struct("Token", token, {}), "sampling": struct("Sampling", sampling, {})}
        return cls(msgspec.json.Decoder(GenericAlias(list, (struct("Entry", e, nested),))), sig)

    def decode(self, data: bytes, n: int) -> list | None:
        """The `n` entries of `data` (a JSON array of them), None unless all are of this shape."""
        try:
            out = self.decoder.decode(data)
        except msgspec.DecodeError:  # (a ValidationError too)
            return None
        return out if len(out) == n and self.encoder.encode(out) == data else None


class _Shape:
    """Entries alike in keys (and their order) and value types: their columns, batch by batch."""

    __slots__ = ("top", "token", "sampling", "parts", "columns", "rows")

    def __init__(self, top: tuple, token: tuple, sampling: tuple):
        self.top, self.token, self.sampling = top, token, sampling  # ((key, type), ...) each
        self.parts: dict[tuple, list] = {}  # (part, key) -> a list of column pieces, one per batch
        self.columns: dict[tuple, Any] = {}  # (part, key) -> the whole column (made by finish)
        self.rows = 0

    def finish(self) -> None:
        for key, parts in self.parts.items():
            self.columns[key] = np.concatenate(parts) if len(parts) > 1 else parts[0]
        self.parts = {}


class StepTable(Sequence):
    """The step entries of a trace opened from disk (the manifest's "steps"), each as validated and
    made inert on open: entries of the plain kind a writer writes are held as columns and made again
    as a dict when asked for (the same dict each time); any other entry is kept as it is."""

    def __init__(self) -> None:
        self._shapes: list[_Shape] = []
        self._shape_ids: dict[tuple, int] = {}
        self._where: list[np.ndarray] = []  # per batch: shape id (-1: kept as a dict) and row, per entry
        self._where_all: np.ndarray | None = None
        self._kept: dict[int, dict] = {}  # index -> entry kept as a dict, or one already made again
        self._memo: list = []  # containers and strings shared by entries (read-only)
        self._memo_ids: dict = {}  # string -> its place in _memo
        self._shared_ids: dict[str, dict] = {}  # entry key -> {key of a container: its place in _memo}
        self._n = 0

    # -- filling, on open ----------------------------------------------------------------------
    def add_dicts(self, entries: Sequence[dict]) -> None:
        """Entries kept as they are (a branch's steps from its parent, entries of an unusual kind)."""
        for e in entries:
            self._kept[self._n] = e
            self._n += 1
        where = np.full((len(entries), 2), -1, dtype=np.int64)
        if self._where_all is None:
            self._where.append(where)
        else:
            self._where_all = np.concatenate([self._where_all, where])

    def add_batch(self, batch: list, first: int, version: int, memo: dict) -> None:
        """Parsed entries of steps `first`..: validated as validate_entry would one by one (the first
        invalid one raises its error), made inert as inert_entry would, then held."""
        n = len(batch)
        groups: dict[tuple, list[int]] = {}
        odd: list[int] = []
        plain_top: dict[tuple, bool] = {}
        values: dict[tuple, tuple[dict | None, dict, dict]] = {}  # group -> its columns, taken once
        for top, rows, top_values in _typed_groups(batch, list(range(n))):
            ok = plain_top.get(top)
            if ok is None:
                ok = plain_top[top] = _plain_top(top, version)
            if not ok:
                odd.extend(rows)
                continue
            if top_values is None:
                ents = [batch[r] for r in rows] if len(rows) < n else batch
                top_values = _take(ents, top[0])
            toks, samplings = top_values["token"], top_values["sampling"]
            for (tok_keys, s_keys), js in _groups(list(zip(map(tuple, toks), map(tuple, samplings)))).items():
                sub_toks = [toks[j] for j in js] if len(js) < len(toks) else toks
                sub_samplings = [samplings[j] for j in js] if len(js) < len(samplings) else samplings
                tok_values, s_values = _take(sub_toks, tok_keys), _take(sub_samplings, s_keys)
                tok_kinds, s_kinds = _column_kinds(tok_values), _column_kinds(s_values)
                if tok_kinds is not None and s_kinds is not None:  # one type per key: the usual case
                    sig = (top, tok_keys, tok_kinds, s_keys, s_kinds)
                    groups[sig] = [rows[j] for j in js]
                    values[sig] = (top_values if len(js) == len(toks) else None, tok_values, s_values)
                    continue
                # a key whose values differ in type: the entries grouped by the types of each
                for sub_sig, ks in _groups(list(zip(map(tuple, map(map, repeat(type), map(dict.values, sub_toks))),
                                                    map(tuple, map(map, repeat(type), map(dict.values, sub_samplings)))))).items():
                    groups.setdefault((top, tok_keys, sub_sig[0], s_keys, sub_sig[1]), []).extend(rows[js[k]] for k in ks)
        self._hold(batch.__getitem__, n, first, version, memo, groups, values, odd)

    def add_structs(self, structs: list, bodies: list[bytes], sig: tuple, first: int, version: int, memo: dict) -> bool:
        """Entries of steps `first`.. (`bodies`: their JSON) decoded as structs of one shape
        (_StructSchema: their bytes are those the schema encodes, so each equals the dict the JSON
        parser makes, with the same keys in the same order and values of the same types, its repeating
        containers' bytes parsed here): validated and held as add_batch does. False (nothing held)
        when a container is not of the shape's type."""
        top, tok_keys, tok_kinds, s_keys, s_kinds = sig
        top_values = _attrs(structs, top[0])
        tok_values, s_values = _attrs(top_values["token"], tok_keys), _attrs(top_values["sampling"], s_keys)
        taken = {"top": (top_values, dict(zip(*top))), "sampling": (s_values, dict(zip(s_keys, s_kinds)))}
        for part, key in _RAW:
            values, kinds = taken[part]
            if key in values:
                raws = values[key]
                starts, run = _runs(raws)
                try:
                    made = [json.loads(bytes(raws[j])) for j in [0, *starts]]
                except RecursionError:
                    return False
                if not all(type(v) is kinds[key] for v in made):
                    return False
                values[key] = list(map(made.__getitem__, run.tolist()))

        def entry(i: int) -> dict:
            return json.loads(bodies[i])

        self._hold(entry, len(structs), first, version, memo, {sig: list(range(len(structs)))}, {sig: (top_values, tok_values, s_values)}, [])
        return True

    def _hold(self, entry: Callable[[int], dict], n: int, first: int, version: int, memo: dict, groups: dict[tuple, list[int]],
              values: dict, odd: list[int]) -> None:
        """Entries of steps `first`.. (`entry(i)`: the i-th as a dict) grouped by shape (`groups`: shape
        -> rows; `values`: a shape's values already taken, if any) or odd (`odd`: kept as dicts):
        checked a column at a time, the first invalid one refused with validate_entry's error."""
        where = np.full((n, 2), -1, dtype=np.int64)
        check: set[int] = set(odd)  # entries validate_entry reads one by one
        columns: dict[tuple, tuple[dict, list[int]]] = {}
        for sig, rows in groups.items():
            top, tok_keys, tok_kinds, s_keys, s_kinds = sig
            if not ("id" in tok_keys and "text" in tok_keys and _plain(tok_keys, tok_kinds, _TOKEN_TYPES)
                    and _plain(s_keys, s_kinds, _SAMPLING_TYPES)):
                odd.extend(rows)
                check.update(rows)
                continue
            taken = values.get(sig)
            ents = [entry(r) for r in rows] if taken is None or taken[0] is None else None
            cols, bad = self._columns(sig, ents, first + np.asarray(rows), taken)
            odd.extend(rows[j] for j in bad)
            check.update(rows[j] for j in bad)
            check.update(rows[j] for j in cols.pop("__first__"))
            columns[sig] = (cols, rows)
        for i in sorted(check):  # in file order: the first invalid entry raises, as reading them in turn would
            validate_entry(entry(i), first + i, version)
        odd_set = set(odd)
        for sig, (cols, rows) in columns.items():
            keep = [j for j, r in enumerate(rows) if r not in odd_set] if odd_set else None
            sid = self._shape_ids.get(sig)
            if sid is None:
                sid = self._shape_ids[sig] = len(self._shapes)
                top, tok_keys, tok_kinds, s_keys, s_kinds = sig
                self._shapes.append(_Shape(tuple(zip(*top)), tuple(zip(tok_keys, tok_kinds)), tuple(zip(s_keys, s_kinds))))
            shape = self._shapes[sid]
            for key, col in cols.items():
                shape.parts.setdefault(key, []).append(col if keep is None else col[keep])
            m = len(rows) if keep is None else len(keep)
            at = np.asarray(rows if keep is None else [rows[j] for j in keep], dtype=np.int64)
            where[at, 0] = sid
            where[at, 1] = np.arange(shape.rows, shape.rows + m)
            shape.rows += m
        for i in sorted(odd_set):
            self._kept[self._n + i] = inert_entry(entry(i), memo)
        self._where.append(where)
        self._n += n

    def _columns(self, sig: tuple, entries: list[dict] | None, index: np.ndarray, taken: tuple[dict | None, dict, dict] | None = None
                 ) -> tuple[dict, list[int]]:
        """{(part, key): column} of entries of one shape (steps `index`), and the rows a column check
        refused (those validate_entry reads); "__first__": rows holding a container seen for the first
        time. `taken`: the values already taken key by key (the entries', None when not taken: then
        from `entries`; their tokens', their sampling records')."""
        top, tok_keys, tok_kinds, s_keys, s_kinds = sig
        if taken is None or taken[0] is None:
            assert entries is not None
            top_values = _take(entries, top[0])
        else:
            top_values = taken[0]
        if taken is None:
            tok_values, s_values = _take(top_values["token"], tok_keys), _take(top_values["sampling"], s_keys)
        else:
            tok_values, s_values = taken[1], taken[2]
        bad = np.zeros(len(index), dtype=bool)
        first: list[int] = []
        cols: dict[Any, Any] = {}

        def numbers(part: str, key: str, kind: type, values: list) -> None:
            if kind is _NONE:
                return
            try:
                a: np.ndarray = np.array(values, dtype=_NUMPY[kind])
            except OverflowError:  # an integer past 64 bits: out of any range
                bad[:] = True
                return
            if kind is int and key in _INT_LIMITS:
                low, high = _INT_LIMITS[key]
                bad[(a < low) | (a > high)] = True
            elif kind is float or (kind is int and key in _FLOAT_LIMITS):
                bottom, ceiling = _FLOAT_LIMITS[key]
                bad[~((a >= bottom) & (a <= ceiling))] = True  # NaN fails both
            cols[(part, key)] = a

        def shared(part: str, key: str, values: list) -> None:
            known = self._shared_ids.setdefault(key, {})
            usual = _usual_containers(key, values)  # then equal values (==) are alike in every type too
            # a container equal to the one before shares its checks and id (a run costs one comparison each)
            starts, run = _runs(values) if usual else (list(range(1, len(values))), np.arange(len(values)))
            hits = []
            for j in [0, *starts]:
                v = values[j]
                try:
                    k = _one_key(key, v)
                except (TypeError, KeyError, ValueError):
                    bad[j] = True
                    hits.append(-1)
                    continue
                hit = known.get(k, -1)
                if hit < 0:
                    first.append(j)
                    hit = known[k] = len(self._memo)
                    self._memo.append(inert_value(v))  # as inert_entry makes it (shared between entries)
                hits.append(hit)
            cols[(part, key)] = np.asarray(hits, dtype=np.int64)[run]

        for key, kind in zip(*top):
            values = top_values[key]
            if key == "positions":
                if set(map(len, values)) != {2}:
                    bad[:] = True
                    continue
                p0, p1 = (list(p) for p in zip(*values))
                if set(map(type, p0)) | set(map(type, p1)) != {int}:
                    bad[:] = True
                    continue
                numbers("top", "p0", int, p0)
                numbers("top", "p1", int, p1)
                a0, a1 = cols[("top", "p0")], cols[("top", "p1")]
                bad[(a0 < 0) | (a0 >= a1) | (a1 > MAX_POSITIONS)] = True
            elif key == "index":
                numbers("top", key, int, values)
                bad[cols.pop(("top", "index")) != index] = True
            elif key == "kind":
                kinds = np.array([_KINDS.get(v, -1) for v in values], dtype=np.int8)
                bad[kinds < 0] = True
                cols[("top", key)] = kinds
            elif key == "file":
                if values == step_filenames(index.tolist()):  # (valid names: index is at most MAX_LIST)
                    cols[("top", key)] = np.full(len(values), -1, dtype=np.int64)  # -1: the name of its index
                else:
                    ok = np.fromiter(map(bool, map(STEP_FILE.match, values)), dtype=bool, count=len(values))
                    bad[~ok] = True
                    self._strings(cols, ("top", key), values)
            elif key == "checksum":
                ok, cols[("top", key)] = _checksums(values)
                bad[~ok] = True
            elif key in ("nonfinite", "aliases"):
                shared("top", key, values)
            elif key in ("token", "sampling"):
                continue
            else:
                numbers("top", key, kind, values)
        for key, kind in zip(tok_keys, tok_kinds):
            values = tok_values[key]
            if kind is str:
                if max(map(len, values)) > 1024:
                    bad[np.fromiter(map(len, values), dtype=np.int64, count=len(values)) > 1024] = True
                self._strings(cols, ("token", key), values)
            else:
                numbers("token", key, kind, values)
        for key, kind in zip(s_keys, s_kinds):
            values = s_values[key]
            if key == "stages":
                shared("sampling", key, values)
            else:
                numbers("sampling", key, kind, values)
        cols["__first__"] = first
        return cols, np.flatnonzero(bad).tolist()

    def _strings(self, cols: dict, key: tuple, values: list) -> None:
        """A column of strings as ids into the shared strings (token texts repeat)."""
        known = self._memo_ids
        out = list(map(known.get, values))
        if None in out:
            for j, hit in enumerate(out):
                if hit is None:
                    hit = known.get(values[j])
                    if hit is None:
                        hit = known[values[j]] = len(self._memo)
                        self._memo.append(values[j])
                    out[j] = hit
        cols[key] = np.array(out, dtype=np.int64)

    def finish(self) -> StepTable:
        for shape in self._shapes:
            shape.finish()
        self._where_all = np.concatenate(self._where) if self._where else np.empty((0, 2), dtype=np.int64)
        self._where = []
        return self

    # -- reading -----------------------------------------------------------------------------------
    def __len__(self) -> int:
        return self._n

    def __getitem__(self, i):
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(self._n))]
        if i < 0:
            i += self._n
        if not 0 <= i < self._n:
            raise IndexError("step index out of range")
        hit = self._kept.get(i)
        if hit is None:
            hit = self._kept[i] = self._make(i)
        return hit

    def _value(self, shape: _Shape, part: str, key: str, kind: type, row: int):
        if kind is _NONE:
            return None
        col = shape.columns[(part, key)]
        if kind is str or kind is list or kind is dict:
            return self._memo[int(col[row])]
        return col[row].item()

    def _make(self, i: int) -> dict:
        assert self._where_all is not None
        sid, row = (int(v) for v in self._where_all[i])
        shape = self._shapes[sid]
        out: dict = {}
        for key, kind in shape.top:
            if key == "index":
                out[key] = i
            elif key == "kind":
                out[key] = _KIND_NAMES[int(shape.columns[("top", key)][row])]
            elif key == "positions":
                out[key] = [int(shape.columns[("top", "p0")][row]), int(shape.columns[("top", "p1")][row])]
            elif key == "file" and shape.columns[("top", key)][row] < 0:
                out[key] = step_filename(i)
            elif key == "checksum":
                out[key] = f"crc32:{int(shape.columns[('top', key)][row]):08x}"
            elif key == "token":
                out[key] = self._token(shape, row)
            elif key == "sampling":
                out[key] = {k: self._value(shape, "sampling", k, t, row) for k, t in shape.sampling}
            else:
                out[key] = self._value(shape, "top", key, kind, row)
        return out

    def _token(self, shape: _Shape, row: int) -> dict:
        return {k: self._value(shape, "token", k, t, row) for k, t in shape.token}

    def token(self, i: int) -> dict:
        """Step i's token record (as entry["token"], without making the entry)."""
        hit = self._kept.get(i)
        if hit is not None:
            return hit["token"]
        assert self._where_all is not None
        sid, row = (int(v) for v in self._where_all[i])
        return self._token(self._shapes[sid], row)

    def column(self, part: str, key: str, default: int = -1) -> np.ndarray:
        """Every entry's integer `key` of its token ("token"), sampling record ("sampling") or itself
        ("top"; "p0"/"p1" the positions), `default` where absent or null (the whole-trace checks)."""
        out = np.full(self._n, default, dtype=np.int64)
        assert self._where_all is not None
        sids, rows = self._where_all[:, 0], self._where_all[:, 1]
        for sid, shape in enumerate(self._shapes):
            col = shape.columns.get((part, key))
            if col is not None and col.dtype.kind in "iu":
                at = sids == sid
                out[at] = col[rows[at]]
        for i, e in self._kept.items():
            if sids[i] >= 0:
                continue
            if part == "top" and key in ("p0", "p1"):
                v = e["positions"][0 if key == "p0" else 1]
            elif part == "top" and key == "kind":
                v = _KINDS.get(e.get("kind", ""))
            else:
                v = (e if part == "top" else e.get(part) or {}).get(key)
            out[i] = default if v is None else v
        return out

    def files(self, first: int = 0) -> list[str]:
        """The step file name of every entry from `first`, in order."""
        assert self._where_all is not None
        out = step_filenames(range(first, self._n))
        sids, rows = self._where_all[first:, 0], self._where_all[first:, 1]
        names = np.full(len(out), -1, dtype=np.int64)  # -1: the name of its index
        for sid, shape in enumerate(self._shapes):
            at = sids == sid
            names[at] = shape.columns[("top", "file")][rows[at]]
        for j in np.flatnonzero(names >= 0).tolist():
            out[j] = self._memo[names[j]]
        for j in np.flatnonzero(sids < 0).tolist():
            out[j] = self._kept[first + j]["file"]
        return out

    @property
    def nbytes(self) -> int:
        return int(self.column("top", "bytes", 0).sum())

    def extend(self, entries: Sequence[dict]) -> None:
        """A live session completed more steps: list their entries (kept as they are)."""
        self.add_dicts(entries)

    def append(self, entry: dict) -> None:
        self.add_dicts([entry])


_KIND_NAMES = ("prefill", "decode")
_KINDS = {name: i for i, name in enumerate(_KIND_NAMES)}


_NAME_KEPT, _KEPT = itemgetter("name", "kept"), itemgetter("kept")


_CRC_PREFIX = np.frombuffer(b"crc32:", dtype=np.uint8)
_NIBBLES = np.full(256, 16, dtype=np.uint32)  # a character's value as a lowercase hex digit (16: none)
_NIBBLES[np.frombuffer(b"0123456789abcdef", dtype=np.uint8)] = np.arange(16, dtype=np.uint32)


def _checksums(values: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """Which strings are a step file checksum ("crc32:" and 8 lowercase hex digits, as CHECKSUM), and
    the crc32 each says (0 where none)."""
    n = len(values)
    joined = "".join(values) if set(map(len, values)) == {14} else ""
    if not (joined.isascii() and len(joined) == 14 * n):  # (a non-ASCII character: the pattern one string at a time)
        ok = np.fromiter(map(bool, map(CHECKSUM.match, values)), dtype=bool, count=n)
        digits = "".join(v[6:] if good else "00000000" for v, good in zip(values, ok.tolist()))
        return ok, np.frombuffer(bytes.fromhex(digits), dtype=">u4").astype(np.uint32)
    chars = np.frombuffer(joined.encode("ascii"), dtype=np.uint8).reshape(n, 14)
    ok, crcs = _hex_words(chars[:, 6:])
    ok &= (chars[:, :6] == _CRC_PREFIX).all(axis=1)
    crcs[~ok] = 0
    return ok, crcs


def _hex_words(chars: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Rows of 8 characters (bytes): which are 8 lowercase hex digits, and the number each writes (0 where not)."""
    nibbles = _NIBBLES[chars]
    ok = (nibbles < 16).all(axis=1)
    nibbles[~ok] = 0
    return ok, (nibbles << np.arange(28, -1, -4, dtype=np.uint32)).sum(axis=1, dtype=np.uint32)


def _runs(values: list) -> tuple[list[int], np.ndarray]:
    """Where each run of equal values (==) after the first starts, and the run each value is in."""
    starts = np.flatnonzero(np.fromiter(map(ne, values[1:], values[:-1]), dtype=bool, count=len(values) - 1)) + 1
    run = np.zeros(len(values), dtype=np.int64)
    run[starts] = 1
    return starts.tolist(), np.cumsum(run)


def _usual_containers(key: str, values: list) -> bool:
    """Whether a container equal (==) to the one before it is alike in every type too, so that it can
    share its checks: strings equal only strings, but a stage's `kept` of 1 equals true and 1.0, so
    those are checked to be integers throughout, in bulk. (The first of each run is checked by _one_key.)"""
    if key != "stages":
        return True
    try:
        return set(map(type, map(_KEPT, chain.from_iterable(values)))) <= {int}
    except (TypeError, KeyError):
        return False


def _one_key(key: str, value) -> tuple:
    """The hashable key of one container of the usual kind (_bulk_keys); TypeError/KeyError otherwise."""
    if key == "stages":
        if type(value) is not list or not all(type(st) is dict and len(st) == 2 for st in value):
            raise TypeError
        pairs = tuple(map(_NAME_KEPT, value))
        if not all(type(n) is str and type(k) is int for n, k in pairs):
            raise TypeError
        return pairs
    if type(value) is list and all(type(v) is str for v in value):
        return tuple(value)
    if type(value) is dict and all(type(k) is str and type(v) is str for k, v in value.items()):
        return tuple(value.items())
    raise TypeError


class TokenList(MutableSequence):
    """A trace's tokens (the manifest's "tokens"): the prompt's, then each step's chosen token, made
    from the step table when asked for; tokens a live session adds later are appended. Changed in
    place otherwise (an item or a slice set, deleted, inserted), it is held as a plain list from then on."""

    def __init__(self, prompt: list[dict], steps: StepTable):
        self._prompt, self._steps, self._listed = prompt, steps, len(steps)
        self._more: list[dict] = []

    def __len__(self) -> int:
        return len(self._prompt) + self._listed + len(self._more)

    def __getitem__(self, i):
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(len(self)))]
        n = len(self)
        if i < 0:
            i += n
        if not 0 <= i < n:
            raise IndexError("token index out of range")
        p = len(self._prompt)
        if i < p:
            return self._prompt[i]
        if i < p + self._listed:
            return self._steps.token(i - p)
        return self._more[i - p - self._listed]

    def _as_list(self) -> list[dict]:
        if self._listed or self._more:
            self._prompt, self._listed, self._more = list(self), 0, []
        return self._prompt

    def __setitem__(self, i, value) -> None:
        self._as_list()[i] = value

    def __delitem__(self, i) -> None:
        del self._as_list()[i]

    def insert(self, i: int, token: dict) -> None:
        self._as_list().insert(i, token)

    def extend(self, tokens) -> None:
        self._more.extend(tokens)

    def append(self, token: dict) -> None:
        self._more.append(token)

    def column(self, key: str) -> np.ndarray:
        """Every token's integer `key` ("id" or "position"), -1 where absent (the whole-trace checks)."""
        def ints(tokens: list[dict]) -> np.ndarray:
            return np.array([-1 if t.get(key) is None else t[key] for t in tokens], dtype=np.int64)
        return np.concatenate([ints(self._prompt), self._steps.column("token", key)[: self._listed], ints(self._more)])


def read_step_log(source, label: str, first: int = 0, version: int = 2, memo: dict | None = None,
                  table: StepTable | None = None) -> StepTable:
    """Entries of steps.jsonl (`source`: its bytes or a binary file), each validated as step
    `first + i` and made inert (tracer/inert.py) as it is read, added to `table` (a new StepTable by
    default). Read a line at a time, each at most MAX_LOG_LINE bytes: a longer line is refused before
    it is held. Every complete line must carry its crc32 stamp and match it; an unterminated last line
    that is a whole stamped entry counts, one cut short (a torn write, which never holds a whole stamp)
    is ignored. Nesting of keys the schema does not know is bounded by validate_entry."""
    fh = io.BytesIO(source) if isinstance(source, (bytes, bytearray, memoryview)) else source
    memo = {} if memo is None else memo
    table = StepTable() if table is None else table
    batch: list[bytes] = []
    batch_bytes = 0
    done = 0
    schema: _StructSchema | None = None  # the shape of the last entry read as a dict

    def flush() -> None:
        nonlocal batch_bytes, done, schema
        if not batch:
            return
        data = b"[" + b",".join(batch) + b"]"
        structs = None if schema is None else schema.decode(data, len(batch))
        if structs is not None and schema is not None and table.add_structs(structs, batch, schema.sig, first + done, version, memo):
            done += len(batch)  # every entry of the shape before: no dict made
            batch.clear()
            batch_bytes = 0
            return
        try:  # a batch of lines as one JSON array
            parsed = msgspec.json.decode(data)
            if len(parsed) != len(batch) or not all(type(e) is dict for e in parsed):
                raise ValueError
        except (msgspec.DecodeError, ValueError, RecursionError):
            parsed = [parse_json(body, f"{label} line {done + i + 1}") for i, body in enumerate(batch)]
            odd = next((i for i, e in enumerate(parsed) if type(e) is not dict), None)
            if odd is not None:  # the entries before it are read first, as one by one
                table.add_batch(parsed[:odd], first + done, version, memo)
                validate_entry(parsed[odd], first + done + odd, version)  # names the field: not an object
        table.add_batch(parsed, first + done, version, memo)
        schema = _StructSchema.of(parsed[-1], version) or schema
        done += len(batch)
        batch.clear()
        batch_bytes = 0

    number = 0

    def one(line: bytes) -> None:
        nonlocal number, batch_bytes
        number += 1
        if len(line) + 1 > MAX_LOG_LINE:
            raise TraceError(f"{label} line {number}: longer than {MAX_LOG_LINE} bytes (the format's limit)")
        body = unstamp(line, f"{label} line {number}")
        if body is None:
            what = "bytes after its checksum" if STAMP_ANYWHERE.search(line) else "no checksum"
            raise TraceError(f"{label} line {number}: {what} (the line was modified or damaged)")
        batch.append(body)
        batch_bytes += len(body)
        if batch_bytes >= _BATCH_BYTES:
            flush()

    enabled = gc.isenabled()
    gc.disable()  # hundreds of thousands of small containers, none of them cyclic: no collection while they are made
    try:
        tail = b""
        while True:
            chunk = fh.read(_CHUNK_BYTES)
            if not chunk:
                break
            data = tail + chunk if tail else chunk
            cut = data.rfind(b"\n") + 1
            lines = data[: cut - 1].split(b"\n") if cut else []
            tail = data[cut:]
            bodies = _stamped_bodies(lines)
            if bodies is None:  # a line to look at closely: one at a time, as the format's rules say
                for line in lines:
                    one(line)
            else:
                number += len(lines)
                batch.extend(bodies)
                batch_bytes += sum(map(len, bodies))
                if batch_bytes >= _BATCH_BYTES:
                    flush()
            if len(tail) > MAX_LOG_LINE:
                raise TraceError(f"{label} line {number + 1}: longer than {MAX_LOG_LINE} bytes (the format's limit)")
        if tail and STAMP_ANYWHERE.search(tail):  # an unterminated last line: a whole stamped entry counts
            number += 1
            body = unstamp(tail, f"{label} line {number}")
            if body is None:
                raise TraceError(f"{label} line {number}: bytes after its checksum (the line was modified or damaged)")
            batch.append(body)  # (an unterminated line without a whole stamp is a torn write: ignored)
        flush()
    finally:
        if enabled:
            gc.enable()
    return table


_CHUNK_BYTES = 1 << 20  # (with an unfinished line of at most MAX_LOG_LINE before it)
_BATCH_BYTES = 4 << 20
_STAMP_SLICE, _BODY_SLICE = itemgetter(slice(-STAMP_TAIL, None)), itemgetter(slice(None, -STAMP_TAIL))
_STAMP_START, _STAMP_END = np.frombuffer(STAMP_HEAD, dtype=np.uint8), np.frombuffer(b'"}', dtype=np.uint8)


def _stamped_bodies(lines: list[bytes]) -> list[bytes] | None:
    """Each line without its crc32 stamp (what `unstamp` returns), checked in bulk; None when any
    line is unusual (too long, no whole stamp, a mismatch): those are read one at a time."""
    if not lines:
        return []
    lengths = list(map(len, lines))
    if max(lengths) + 1 > MAX_LOG_LINE or min(lengths) <= STAMP_TAIL + 1:
        return None
    tails = np.frombuffer(b"".join(map(_STAMP_SLICE, lines)), dtype=np.uint8).reshape(len(lines), STAMP_TAIL)
    if not ((tails[:, :-10] == _STAMP_START).all() and (tails[:, -2:] == _STAMP_END).all()):
        return None
    ok, want = _hex_words(tails[:, -10:-2])
    if not ok.all():
        return None
    bodies = list(map(bytes.__add__, map(_BODY_SLICE, lines), repeat(b"}")))
    if not np.array_equal(np.fromiter(map(zlib.crc32, bodies), dtype=np.uint32, count=len(bodies)), want):
        return None
    return bodies


def _check_sequence(manifest: dict, label: str) -> None:
    """Steps in order, each at the positions the previous ones leave, tokens consistent."""
    prompt_len = manifest["prompt_len"]
    steps = manifest["steps"]
    expected = prompt_len + len(steps)
    if len(manifest["tokens"]) != expected:
        raise TraceError(f"{label}.tokens: expected {expected} tokens (prompt + one per step), got {len(manifest['tokens'])}")
    order: Sequence[int] = range(len(steps))
    if isinstance(steps, StepTable) and len(steps):  # columns: only a step that breaks the rule is read below
        n = len(steps)
        start = np.arange(prompt_len - 1, prompt_len + n - 1)
        start[0] = 0
        kind = steps.column("top", "kind", -1)
        wrong = (steps.column("top", "p0") != start) | (steps.column("top", "p1") != np.arange(prompt_len, prompt_len + n))
        wrong |= (kind >= 0) & (kind != (np.arange(n) > 0))
        order = np.flatnonzero(wrong)[:1].tolist()
    for i in order:
        e = steps[i]
        want = [0, prompt_len] if i == 0 else [prompt_len + i - 1, prompt_len + i]
        if list(e["positions"]) != want:
            raise TraceError(f"steps[{i}].positions: expected {want}, got {e['positions']}")
        if e.get("kind", "prefill" if i == 0 else "decode") != ("prefill" if i == 0 else "decode"):
            raise TraceError(f"steps[{i}].kind: expected {'prefill' if i == 0 else 'decode'}")


def _check_files(dir_fd: int, steps: Sequence[dict], first: int) -> None:
    """Each listed step file (from step `first`) is a regular file of the size its entry says."""
    if isinstance(steps, StepTable):
        names, sizes = steps.files(first), steps.column("top", "bytes", -1)[first:]
        stat_of = functools.partial(os.stat, dir_fd=dir_fd, follow_symlinks=False)
        for start in range(0, len(names), _STAT_BATCH):  # the names are valid step file names (checked on read)
            try:
                found = list(map(stat_of, names[start : start + _STAT_BATCH]))
            except OSError:  # a file missing or unreadable: told by the first failure in order below
                wrong = list(range(len(names[start : start + _STAT_BATCH])))
            else:
                mode = np.fromiter(map(_ST_MODE, found), dtype=np.int64, count=len(found))
                size = np.fromiter(map(_ST_SIZE, found), dtype=np.int64, count=len(found))
                want = sizes[start : start + len(found)]
                wrong = np.flatnonzero(((mode & 0o170000) != stat.S_IFREG)  # (the S_IFMT bits)
                                        | ((want >= 0) & (size != want))).tolist()
            for j in wrong:
                _check_file(dir_fd, steps[first + start + j])
        return
    for e in steps[first:]:
        _check_file(dir_fd, e)


_STAT_BATCH = 4096
_ST_MODE, _ST_SIZE = attrgetter("st_mode"), attrgetter("st_size")


def _check_file(dir_fd: int, e: dict) -> None:
    size = stat_in_dir(dir_fd, e["file"], f"{e['file']}: step {e['index']}")
    if "bytes" in e and size != e["bytes"]:
        raise TraceError(f"{e['file']}: step {e['index']} is corrupted ({size} bytes, manifest says {e['bytes']})")


def read_manifest(path: str) -> dict:
    """The validated manifest (schema-1 shaped in memory: with "steps" and every token)."""
    dir_fd = open_dir(path)
    shared: list[dict] = []
    try:
        try:
            raw = read_in_dir(dir_fd, MANIFEST, MAX_MANIFEST_BYTES, f"{path}: {MANIFEST}")
        except FileNotFoundError:
            raise TraceError(f"{path}: not a trace (no {MANIFEST})") from None
        body = unstamp(raw.rstrip(b" \t\r\n"), MANIFEST)
        try:
            manifest = parse_json(raw if body is None else body, MANIFEST)
        except TraceError as exc:
            raise TraceError(f"{path}: corrupted manifest ({exc})") from None
        validate_manifest(manifest)
        version = manifest["schema_version"]
        if body is None and version >= 2:
            raise TraceError(f"{MANIFEST}: no checksum (a schema-{version} manifest carries one: the file was modified or damaged)")
        if version >= 2:
            if len(manifest["tokens"]) != manifest["prompt_len"]:
                raise TraceError(f"manifest.tokens: expected the {manifest['prompt_len']} prompt tokens, got {len(manifest['tokens'])}")
            manifest = inert_manifest(manifest)
            if manifest.get("branch") is not None:  # a branch: the steps before its branch point are its parent's
                branch_field(path, manifest)  # checked before its parent is read
                shared = shared_steps(path, manifest, read_manifest(parent_dir(path)))
            try:
                fd, _size = open_in_dir(dir_fd, STEP_LOG, MAX_LOG_BYTES, f"{path}: {STEP_LOG}")
            except FileNotFoundError:
                raise TraceError(f"{path}: not a complete trace (no {STEP_LOG})") from None
            try:
                with os.fdopen(fd, "rb", buffering=1 << 16) as fh:
                    table = StepTable()
                    table.add_dicts(shared)
                    manifest["steps"] = read_step_log(fh, STEP_LOG, len(shared), version, table=table).finish()
            except OSError as exc:
                raise TraceError(f"{path}: {STEP_LOG}: cannot read ({exc.strerror})") from None
            manifest["tokens"] = TokenList(manifest["tokens"], table)
        else:
            for i, e in enumerate(want_list("manifest.steps", manifest.get("steps"))):
                validate_entry(e, i, version)
            manifest = inert_manifest(manifest)
        _check_sequence(manifest, "manifest")
        _check_files(dir_fd, manifest["steps"], len(shared))  # a parent's steps were checked in its directory
    finally:
        os.close(dir_fd)
    return manifest


def load_trace(path: str | os.PathLike) -> Trace:
    """Open a trace directory: reads and validates manifest.json and steps.jsonl, checks each
    listed step file is a regular file of the recorded size (a stat each)."""
    path = os.fspath(path)
    if "\0" in path:
        raise TraceError("the trace path holds a NUL character")
    manifest = read_manifest(path)
    check_trace(manifest)
    return Trace(path, manifest)
