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
import io
import json
import mmap
import os
import zlib
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from .attention_rows import rows as attention_map_rows
from .branch_layout import branch_field, parent_dir, root_dir, shared_steps, step_dirs
from .consistency import StepRules, check_lens, check_trace
from .inert import inert, inert_entry, inert_manifest
from .lens import LogitLens
from .names import O_INPUT, RESULT, forward_order
from .safe_io import open_dir, open_in_dir, read_in_dir, read_trace_file, stat_in_dir
from .safetensors_read import header_arrays, parse_safetensors_header
from .schema import (
    MAX_LOG_BYTES,
    MAX_LOG_LINE,
    MAX_MANIFEST_BYTES,
    MAX_STEP_BYTES,
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
    STEP_LOG,
    VALUE_DTYPES,
    TraceError,
    from_buffer,
    parse_crc_list,
    step_checksum,
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
        self._entries = list(entries)
        self._steps: list[Step | None] = [None] * len(self._entries)  # each made on first use
        self._open: list[Step] = []
        self._max_open = max_open

    def _new_step(self, entry: dict) -> Step:
        index = entry["index"]
        trace_dir = self._dirs[index] if 0 <= index < len(self._dirs) else self._dir
        return Step(trace_dir, entry, self._facts, self._version, self._lens, self._rules)

    def __len__(self) -> int:
        return len(self._entries)

    def __getitem__(self, i):
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(len(self)))]
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
        return list(self._entries)

    @property
    def files(self) -> dict[str, str]:
        """{step file name: its path}: where each listed step's file lives (a parent's directory
        for a branch's shared steps)."""
        dirs = self._dirs
        return {e["file"]: os.path.join(dirs[e["index"]] if 0 <= e["index"] < len(dirs) else self._dir, e["file"])
                for e in self._entries}

    @property
    def nbytes(self) -> int:
        """Bytes of every listed step file (from the entries)."""
        return sum(int(e.get("bytes", 0)) for e in self._entries)

    def fresh(self, entry: dict) -> Step:
        """A new Step over the file of manifest `entry` (one of this trace's steps), sharing nothing
        with this list: safe to build and read in a worker thread; drop it after use."""
        return self._new_step(entry)

    def sync(self, entries: list[dict]) -> None:
        """A live session wrote more steps: list them (entries is the manifest's step list)."""
        for entry in entries[len(self._entries) :]:
            self._entries.append(entry)
            self._steps.append(None)


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


def read_step_log(source, label: str, first: int = 0, version: int = 2, memo: dict | None = None) -> list[dict]:
    """Entries of steps.jsonl (`source`: its bytes or a binary file), each validated as step
    `first + i` and made inert (tracer/inert.py) as it is read. Read a line at a time, each at most
    MAX_LOG_LINE bytes: a longer line is refused before it is held. Every complete line must carry
    its crc32 stamp and match it; an unterminated last line that is a whole stamped entry counts,
    one cut short (a torn write, which never holds a whole stamp) is ignored. Nesting of keys the
    schema does not know is bounded by validate_entry."""
    fh = io.BytesIO(source) if isinstance(source, (bytes, bytearray, memoryview)) else source
    memo = {} if memo is None else memo
    entries: list[dict] = []
    batch: list[bytes] = []
    batch_bytes = 0

    def flush() -> None:
        nonlocal batch_bytes
        if not batch:
            return
        n0 = len(entries)
        try:  # fast path: a batch of lines as one JSON array
            parsed = json.loads(b"[" + b",".join(batch) + b"]")
            if len(parsed) != len(batch) or not all(type(e) is dict for e in parsed):
                raise ValueError
        except (ValueError, RecursionError):
            parsed = [parse_json(body, f"{label} line {n0 + i + 1}") for i, body in enumerate(batch)]
        for i, e in enumerate(parsed):
            validate_entry(e, first + n0 + i, version)
            entries.append(inert_entry(e, memo))
        batch.clear()
        batch_bytes = 0

    number = 0
    while True:
        line = fh.readline(MAX_LOG_LINE + 1)
        if not line:
            break
        number += 1
        if len(line) > MAX_LOG_LINE:
            raise TraceError(f"{label} line {number}: longer than {MAX_LOG_LINE} bytes (the format's limit)")
        if line.endswith(b"\n"):
            line = line[:-1]
        elif not STAMP_ANYWHERE.search(line):
            break  # an unterminated last line without a whole stamp: a torn write
        body = unstamp(line, f"{label} line {number}")
        if body is None:
            what = "bytes after its checksum" if STAMP_ANYWHERE.search(line) else "no checksum"
            raise TraceError(f"{label} line {number}: {what} (the line was modified or damaged)")
        batch.append(body)
        batch_bytes += len(body)
        if batch_bytes >= 1 << 20:
            flush()
    flush()
    return entries


def _check_sequence(manifest: dict, label: str) -> None:
    """Steps in order, each at the positions the previous ones leave, tokens consistent."""
    prompt_len = manifest["prompt_len"]
    steps = manifest["steps"]
    expected = prompt_len + len(steps)
    if len(manifest["tokens"]) != expected:
        raise TraceError(f"{label}.tokens: expected {expected} tokens (prompt + one per step), got {len(manifest['tokens'])}")
    for i, e in enumerate(steps):
        want = [0, prompt_len] if i == 0 else [prompt_len + i - 1, prompt_len + i]
        if list(e["positions"]) != want:
            raise TraceError(f"steps[{i}].positions: expected {want}, got {e['positions']}")
        if e.get("kind", "prefill" if i == 0 else "decode") != ("prefill" if i == 0 else "decode"):
            raise TraceError(f"steps[{i}].kind: expected {'prefill' if i == 0 else 'decode'}")


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
                    manifest["steps"] = shared + read_step_log(fh, STEP_LOG, len(shared), version)
            except OSError as exc:
                raise TraceError(f"{path}: {STEP_LOG}: cannot read ({exc.strerror})") from None
            manifest["tokens"] = manifest["tokens"] + [e["token"] for e in manifest["steps"]]
        else:
            for i, e in enumerate(want_list("manifest.steps", manifest.get("steps"))):
                validate_entry(e, i, version)
            manifest = inert_manifest(manifest)
        _check_sequence(manifest, "manifest")
        for e in manifest["steps"][len(shared) :]:  # a parent's steps were checked in its directory
            size = stat_in_dir(dir_fd, e["file"], f"{e['file']}: step {e['index']}")
            if "bytes" in e and size != e["bytes"]:
                raise TraceError(f"{e['file']}: step {e['index']} is corrupted ({size} bytes, manifest says {e['bytes']})")
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
