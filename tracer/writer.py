"""Writing a trace directory step by step, append-only, optionally on a background thread.

Order of operations for every step: arrays -> `step_NNNNN.safetensors` (header and tensor bytes
streamed straight into a temp file, then renamed), then one line appended to steps.jsonl. A kill
between the two leaves an unlisted step file; a torn last line is ignored by the reader. The
small manifest.json is written at open and at close only, so a step costs the same at step 10
and at step 10,000. A full disk raises TraceWriteError, keeps every listed step and marks the
manifest `stop_reason: "error"` (rewritten in place into its reserved padding if need be).

An existing trace given as the output is replaced only once the new run has a complete step:
the new trace is written in a fresh sibling directory and swapped in. A directory holding
anything but a trace is refused before a byte is touched.
"""

from __future__ import annotations

import ctypes
import errno
import itertools
import json
import os
import queue
import shutil
import struct
import tempfile
import threading
import zlib
from collections.abc import Iterable, MutableMapping

import numpy as np

from .budget import trimmed_rows
from .direct_io import contiguous_pieces, write_direct
from .names import forward_order
from .safe_io import valid_name
from .schema import finite_or_none, validate_entry
from .step_arrays import StepArrays
from .trace_format import (
    CRC_KEY,
    DTYPE_CODES,
    FILE_MODE,
    LENS_FILE,
    MANIFEST,
    MANIFEST_PAD,
    SCHEMA,
    SCHEMA_VERSION,
    SIDE_FILES,
    STEP_LOG,
    TEMP_PREFIX,
    TraceError,
    TraceWriteError,
    atomic_write,
    atomic_write_bytes,
    crc_list,
    stamp_json,
    step_checksum,
    step_filename,
    widen,
)

_IOV_MAX = 1024  # buffers per writev call (POSIX's usual limit)


# -- the output directory ------------------------------------------------------------------------
def out_dir_state(path: str) -> str:
    """"new" (absent or empty), "trace" (a previous stepscope trace) or raise TraceWriteError
    (anything else). Reads at most a manifest's first bytes; never modifies anything."""
    if not os.path.lexists(path):
        parent = os.path.dirname(os.path.abspath(path))
        if not os.path.isdir(parent):
            raise TraceWriteError(f"cannot create trace directory {path}: its parent does not exist")
        if not os.access(parent, os.W_OK):
            raise TraceWriteError(f"cannot create trace directory {path}: {parent} is not writable")
        return "new"
    if os.path.islink(path) or not os.path.isdir(path):
        raise TraceWriteError(f"{path} exists and is not a directory; choose an empty or new directory")
    if not os.access(path, os.W_OK):
        raise TraceWriteError(f"trace directory {path} is not writable")
    entries = os.listdir(path)
    if not entries:
        return "new"
    foreign = [f for f in entries if not (valid_name(f) or f.startswith(TEMP_PREFIX))]
    if foreign or MANIFEST not in entries or not _is_stepscope_manifest(os.path.join(path, MANIFEST)):
        raise TraceWriteError(f"{path} is not a trace directory (it holds other files); choose an empty or new directory")
    return "trace"


def _is_stepscope_manifest(path: str) -> bool:
    if os.path.islink(path) or not os.path.isfile(path):
        return False
    try:
        with open(path, "rb") as fh:
            head = fh.read(4096)
    except OSError:
        return False
    return b'"schema":"' + SCHEMA.encode() + b'"' in head.replace(b" ", b"")


def prepare_directory(path: str) -> str:
    """Check `path` as an output (see out_dir_state) and create it when new. Deletes nothing."""
    state = out_dir_state(path)
    if state == "new":
        try:
            os.makedirs(path, exist_ok=True)
        except OSError as exc:
            raise TraceWriteError(f"cannot create trace directory {path}: {exc.strerror}") from None
    return state


def _exchange(a: str, b: str) -> bool:
    """Atomically swap two paths (Linux renameat2 RENAME_EXCHANGE); False where unsupported."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        fn = libc.renameat2
    except (OSError, AttributeError):
        return False
    at_fdcwd, rename_exchange = -100, 2
    return fn(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange) == 0


def swap_in(staging: str, final: str) -> None:
    """Put the directory `staging` at `final`; the trace that was there is deleted afterwards."""
    if os.path.lexists(final) and _exchange(staging, final):
        shutil.rmtree(staging, ignore_errors=True)  # staging now holds the old trace
        return
    old = None
    if os.path.lexists(final):
        old = tempfile.mkdtemp(prefix="." + os.path.basename(final) + ".stepscope-old-", dir=os.path.dirname(os.path.abspath(final)))
        os.rename(final, os.path.join(old, "trace"))
    os.rename(staging, final)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


# -- step files ------------------------------------------------------------------------------------
def nonfinite_names(arrays: dict[str, np.ndarray]) -> list[str]:
    """Names holding NaN or inf (masked attention scores are -inf by design: only NaN/+inf count there)."""
    bad = []
    for name, a in arrays.items():
        a = widen(a)
        if a.dtype.kind != "f" or a.size == 0:
            continue
        hi = a.max()  # NaN propagates through max/min: two reductions, no temporary array
        if name.endswith("hook_attn_scores"):
            if np.isnan(hi) or hi == np.inf:
                bad.append(name)
        elif not (np.isfinite(hi) and np.isfinite(a.min())):
            bad.append(name)
    return bad


def _bytes_of(a: np.ndarray) -> memoryview:
    return memoryview(a.reshape(-1)).cast("B")  # type: ignore[arg-type]  # numpy stubs: ndarray is a Buffer only on 3.12+


_ORDERS: dict[tuple, list[str]] = {}  # names in arrival order -> the same names in forward order


def _forward_order(arrays: dict) -> list[str]:
    """forward_order(arrays), sorted once per set of names (every decode step records the same)."""
    key = tuple(arrays)
    order = _ORDERS.get(key)
    if order is None:
        if len(_ORDERS) > 64:
            _ORDERS.clear()
        order = _ORDERS[key] = forward_order(key)
    return order


Entry = tuple  # (name, numpy dtype, shape, nbytes, (start, end) in the StepArrays buffer or None, array or None)


def _entries(arrays) -> list[Entry]:
    """Every array as an Entry in candidate file order: a StepArrays' buffer order then its extra
    arrays (arrival order: an alias's source comes first); forward order for a plain dict."""
    items: Iterable[tuple[str, np.ndarray]]
    out: list[Entry]
    if isinstance(arrays, StepArrays):
        dtype, shapes = (arrays.flat.dtype if arrays.flat is not None else None), arrays.shapes
        out = [(n, dtype, shapes[n], span[1] - span[0], span, None) for n, span in arrays.spans.items()]
        items = arrays.extra.items()
    else:
        out, items = [], ((n, arrays[n]) for n in _forward_order(arrays))
    for name, a in items:
        if not a.flags.c_contiguous:
            a = np.ascontiguousarray(a)
        out.append((name, a.dtype, a.shape, a.nbytes, None, a))
    return out


def _entry_bytes(entry: Entry, flat: memoryview | None) -> memoryview:
    span, a = entry[4], entry[5]
    if span is not None:
        assert flat is not None  # a span is in a StepArrays buffer
        return flat[span[0] : span[1]]
    return a.data.cast("B") if a.ndim else memoryview(a.reshape(1)).cast("B")


def _same_bytes(a: memoryview, b: memoryview) -> bool:
    """Byte equality (memoryview's own == compares element by element: 25x slower)."""
    return len(a) == len(b) and np.array_equal(np.frombuffer(a, np.uint8), np.frombuffer(b, np.uint8))


def dedupe(arrays) -> tuple[list[Entry], dict[str, str], list[int]]:
    """(stored entries in file order, aliases {name: stored name with identical bytes}, crc32 of
    each stored entry). An alias has the same dtype, shape and crc32 as a stored array, confirmed
    byte by byte."""
    flat = arrays.flat_bytes if isinstance(arrays, StepArrays) else None
    entries = _entries(arrays)
    datas = [_entry_bytes(e, flat) for e in entries]
    all_crcs = list(map(zlib.crc32, datas))  # one C call per array, no Python frame
    stored: list[Entry] = []
    aliases: dict[str, str] = {}
    crcs: list[int] = []
    first: dict[int, int] = {}  # crc -> index (into entries) of the first stored array with it
    for i, crc in enumerate(all_crcs):
        j = first.setdefault(crc, i)
        if j != i:  # same crc as an earlier array: an alias if dtype, shape and bytes agree
            later = (k for k in range(j + 1, i) if all_crcs[k] == crc and entries[k][0] not in aliases)  # lazily: rare
            twin = next((k for k in itertools.chain((j,), later)
                         if entries[k][1] == entries[i][1] and entries[k][2] == entries[i][2] and _same_bytes(datas[k], datas[i])), None)
            if twin is not None:
                aliases[entries[i][0]] = entries[twin][0]
                continue
        stored.append(entries[i])
        crcs.append(crc)
    return stored, aliases, crcs


def data_pieces(stored: list[Entry], arrays) -> list:
    """The stored entries' bytes in file order as few pieces as possible: neighbouring spans of a
    StepArrays buffer become one memoryview; other arrays stay arrays."""
    flat = arrays.flat_bytes if isinstance(arrays, StepArrays) else None
    pieces: list = []
    run: list[int] | None = None  # [start, end] of the current stretch of the flat buffer (a StepArrays')
    for entry in stored:
        span = entry[4]
        if span is not None and run is not None and span[0] == run[1]:
            run[1] = span[1]
            continue
        if run is not None:
            assert flat is not None
            pieces.append(flat[run[0] : run[1]])
            run = None
        if span is not None:
            run = [span[0], span[1]]
        else:
            pieces.append(entry[5])
    if run is not None:
        assert flat is not None
        pieces.append(flat[run[0] : run[1]])
    return pieces


_FRAGMENTS: dict[tuple, str] = {}  # (name, dtype, shape, start, end) -> its header entry (decode steps repeat them)


def _fragment(name: str, dtype: str, shape: tuple, start: int, end: int) -> str:
    key = (name, dtype, shape, start, end)
    text = _FRAGMENTS.get(key)
    if text is None:
        if len(_FRAGMENTS) > 200_000:
            _FRAGMENTS.clear()
        text = _FRAGMENTS[key] = '%s:{"dtype":"%s","shape":[%s],"data_offsets":[%d,%d]}' % (
            json.dumps(name), dtype, ",".join(map(str, shape)), start, end)
    return text


def header_bytes(stored, crcs=None) -> bytes:
    """The safetensors prefix: 8-byte length + JSON header padded with spaces to 8-byte alignment.
    `stored`: entries (see dedupe) or a dict name -> array; `crcs` (a list in file order, or a dict
    by name) go into __metadata__ so that a reader can verify each tensor on its first read. The
    JSON is what json.dumps(..., separators=(",", ":")) gives, assembled from cached pieces."""
    if isinstance(stored, dict):
        if isinstance(crcs, dict):
            crcs = [crcs[n] for n in stored]
        stored = [(n, a.dtype, a.shape, a.nbytes, None, a) for n, a in stored.items()]
    parts, offset = [], 0
    if crcs is not None:
        parts.append('"__metadata__":{"%s":"%s"}' % (CRC_KEY, crc_list(crcs)))
    for name, dtype, shape, nbytes, _, _ in stored:
        code = DTYPE_CODES.get(dtype)
        if code is None:
            raise TraceWriteError(f"cannot store {name}: dtype {dtype} has no safetensors code")
        end = offset + nbytes
        parts.append(_fragment(name, code, tuple(shape), offset, end))
        offset = end
    raw = ("{" + ",".join(parts) + "}").encode("utf-8")
    raw += b" " * (-len(raw) % 8)
    return struct.pack("<Q", len(raw)) + raw


def _write_all(fd: int, views: list[memoryview]) -> None:
    """Write every buffer in order with as few system calls as writev allows (partial writes resumed)."""
    i = 0
    while i < len(views):
        n = os.writev(fd, views[i : i + _IOV_MAX])
        while n and n >= len(views[i]):
            n -= len(views[i])
            i += 1
        if n:
            views[i] = views[i][n:]


_DIRECT_MIN = 256 * 1024  # files at least this big bypass the page cache (tracer/direct_io.py)


def _bytes(piece) -> memoryview:
    return piece if isinstance(piece, memoryview) else _bytes_of(np.ascontiguousarray(piece))


def _fill(fd: int, tmp: str, prefix: bytes, pieces: list, size: int) -> None:
    """Put `prefix` then each piece (a memoryview, or an array in C order with any strides) into
    the empty file `tmp` (descriptor `fd`): past the page cache when the file is large and the
    filesystem allows it, else with writev."""
    if size >= _DIRECT_MIN:
        chunks = itertools.chain([memoryview(prefix)], *((p,) if isinstance(p, memoryview) else contiguous_pieces(p) for p in pieces))
        if write_direct(tmp, fd, chunks, size):
            return
    _write_all(fd, [memoryview(prefix), *(_bytes(p) for p in pieces)])


def write_safetensors(path: str, prefix: bytes, pieces: list) -> int:
    """A safetensors file at `path` from its prefix (header_bytes) and its data in file order
    (arrays or memoryviews), through a temp file in the same directory and a rename. Returns its size."""
    pieces = [p for p in pieces if (len(p) if isinstance(p, memoryview) else p.nbytes)]
    size = len(prefix) + sum(len(p) if isinstance(p, memoryview) else p.nbytes for p in pieces)
    atomic_write(path, lambda fd, tmp: _fill(fd, tmp, prefix, pieces, size))
    return size


def write_step_file(path: str, arrays: dict[str, np.ndarray]) -> tuple[int, str, dict[str, str]]:
    """Write one step's arrays as a safetensors file at `path` (temp file + rename), straight
    from the arrays' memory (no payload built in memory). (bytes, checksum, aliases)."""
    stored, aliases, crcs = dedupe(arrays)
    prefix = header_bytes(stored, crcs)
    size = write_safetensors(path, prefix, data_pieces(stored, arrays))
    return size, step_checksum(prefix, crcs), aliases


class StepStream(MutableMapping):
    """One step's safetensors file written while the step is computed, tensor by tensor, so the
    step is never held in memory whole (a long prefill: tracer/recorder.py hands each layer's
    tensors over as the forward produces them).

    The data goes into a temp file in the trace directory from offset `reserve` on; `finish`
    writes the header in front of it (its JSON padded with spaces to fill the reserved room, which
    safetensors allows) and renames the file into place. Memory: one array (or one block of
    rows) at a time, plus a block of 8 MiB when an alias is compared. The
    file is then what `write_step_file` writes for the same arrays: the same entries, checksums and
    aliases (an array whose bytes equal an earlier one's is an alias: its bytes, just written, are
    compared with the stored ones read back, and the write is undone). Only the header's padding
    and the order of the tensors in the file differ. A header too large for its room (never with
    the room `header_room` gives) moves the data once, in the kernel (copy_file_range).

    As a mapping it holds the streamed names (read back from the file when asked, which nobody
    does on the hot path) and `extra` arrays added afterwards (sampling, the lens), written by
    `finish`. A kill leaves only a temp file, which readers ignore."""

    def __init__(self, directory: str, reserve: int):
        self.reserve = -(-max(reserve, 4096) // 4096) * 4096
        self.fd, self.tmp = tempfile.mkstemp(prefix=TEMP_PREFIX, dir=directory)
        self.size = 0  # data bytes written
        self.entries: list[Entry] = []  # stored, in file order; span = (start, end) in the data
        self.crcs: list[int] = []
        self.aliases: dict[str, str] = {}
        self.shapes: dict[str, tuple] = {}  # every streamed name (stored or alias) -> shape
        self.extra: dict[str, np.ndarray] = {}
        self.nonfinite: list[str] = []  # streamed names holding NaN/inf, as the caller scanned them
        self._by_crc: dict[int, list[int]] = {}
        self._done = False

    # -- writing -----------------------------------------------------------------------------------
    def add(self, name: str, array: np.ndarray) -> None:
        """Append one array (any strides; C order on disk)."""
        self._append(name, array.dtype, array.shape, [array])

    def add_rows(self, name: str, rows: int, pieces) -> None:
        """Append one array of `rows` rows given as consecutive blocks of rows (`pieces`, consumed
        one at a time: only the current block is in memory); dtype and row shape from the first."""
        pieces = iter(pieces)
        first = next(pieces)
        self._append(name, first.dtype, (rows, *first.shape[1:]), itertools.chain([first], pieces))

    def _append(self, name: str, dtype, shape: tuple, pieces) -> None:
        start, crc = self.size, 0
        for piece in pieces:
            for view in contiguous_pieces(piece):
                crc = zlib.crc32(view, crc)
                self._write(view)
        dtype, shape = np.dtype(dtype), tuple(int(d) for d in shape)
        nbytes = self.size - start
        if nbytes != int(np.prod(shape, dtype=np.int64)) * dtype.itemsize:
            raise ValueError(f"{name}: {nbytes} bytes streamed for shape {shape} {dtype}")
        self.shapes[name] = shape
        for k in self._by_crc.get(crc, ()):
            twin = self.entries[k]
            if twin[1] == dtype and tuple(twin[2]) == shape and self._same_span(twin[4], (start, self.size)):
                self.aliases[name] = twin[0]
                self.size = start  # undone: the next array overwrites it, finish() truncates
                return
        self._by_crc.setdefault(crc, []).append(len(self.entries))
        self.entries.append((name, dtype, shape, nbytes, (start, self.size), None))
        self.crcs.append(crc)

    def _write(self, view: memoryview) -> None:
        offset = self.reserve + self.size
        while len(view):
            n = os.pwrite(self.fd, view, offset)
            view, offset = view[n:], offset + n
            self.size += n

    def _read(self, start: int, end: int) -> bytes:
        return os.pread(self.fd, end - start, self.reserve + start)

    def _same_span(self, a: tuple[int, int], b: tuple[int, int]) -> bool:
        """The data bytes at spans a and b are equal (compared a block at a time)."""
        if a[1] - a[0] != b[1] - b[0]:
            return False
        block = 8 << 20
        for off in range(0, a[1] - a[0], block):
            n = min(block, a[1] - a[0] - off)
            if self._read(a[0] + off, a[0] + off + n) != self._read(b[0] + off, b[0] + off + n):
                return False
        return True

    def finish(self, path: str) -> tuple[int, str, dict[str, str]]:
        """Write the extra arrays and the header, put the file at `path`. (bytes, checksum, aliases)."""
        for name, a in list(self.extra.items()):
            self.add(name, a)
        raw = header_bytes(self.entries, self.crcs)[8:]
        if 8 + len(raw) <= self.reserve:
            raw = raw.ljust(self.reserve - 8)  # spaces after the JSON object: still a safetensors header
            prefix = struct.pack("<Q", len(raw)) + raw
            os.ftruncate(self.fd, self.reserve + self.size)
            _write_all_at(self.fd, prefix, 0)
            size = self.reserve + self.size
        else:
            prefix = struct.pack("<Q", len(raw)) + raw
            size = self._relocate(prefix)
        os.close(self.fd)
        self.fd = -1
        os.chmod(self.tmp, FILE_MODE)
        os.replace(self.tmp, path)
        self._done = True
        return size, step_checksum(prefix, self.crcs), dict(self.aliases)

    def _relocate(self, prefix: bytes) -> int:
        """A new temp file holding `prefix` and then the data, copied by the kernel."""
        fd, tmp = tempfile.mkstemp(prefix=TEMP_PREFIX, dir=os.path.dirname(self.tmp))
        try:
            _write_all_at(fd, prefix, 0)
            done = 0
            while done < self.size:
                n = os.copy_file_range(self.fd, fd, self.size - done, self.reserve + done, len(prefix) + done)
                if n <= 0:
                    raise OSError(errno.EIO, "copy_file_range copied nothing")
                done += n
        except BaseException:
            os.close(fd)
            os.unlink(tmp)
            raise
        os.close(self.fd)
        os.unlink(self.tmp)
        self.fd, self.tmp = fd, tmp
        return len(prefix) + self.size

    def abort(self) -> None:
        """Remove the temp file (a failed or abandoned step). Safe to call twice."""
        if self._done:
            return
        self._done = True
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1
        try:
            os.unlink(self.tmp)
        except OSError:
            pass

    # -- the mapping ---------------------------------------------------------------------------------
    def shape_of(self, name: str) -> tuple:
        return self.shapes[name] if name in self.shapes else self.extra[name].shape

    def __getitem__(self, name: str) -> np.ndarray:
        if name in self.extra:
            return self.extra[name]
        entry = next((e for e in self.entries if e[0] == self.aliases.get(name, name)), None)
        if entry is None:
            raise KeyError(name)
        start, end = entry[4]
        return np.frombuffer(self._read(start, end), entry[1]).reshape(entry[2])

    def __setitem__(self, name: str, value: np.ndarray) -> None:
        if name in self.shapes:
            raise KeyError(f"{name} is already on disk")
        self.extra[name] = value

    def __delitem__(self, name: str) -> None:
        del self.extra[name]

    def __iter__(self):
        yield from self.shapes
        yield from self.extra

    def __len__(self) -> int:
        return len(self.shapes) + len(self.extra)

    def __contains__(self, name: object) -> bool:
        return name in self.shapes or name in self.extra


def header_room(names: Iterable[str], extra: int = 64) -> int:
    """Bytes to reserve for the header of a streamed step recording at most `names` plus `extra`
    other arrays: every entry with 4 dimensions and offsets of 20 digits, its crc, and 4 KiB."""
    room = 4096 + extra * 400
    for name in names:
        room += len(json.dumps(name)) + 200
    return room


def _write_all_at(fd: int, data: bytes, offset: int) -> None:
    view = memoryview(data)
    while len(view):
        n = os.pwrite(fd, view, offset)
        view, offset = view[n:], offset + n


def shapes_of(arrays) -> Iterable[tuple[str, tuple]]:
    """(name, shape) of every array of a step, without reading a streamed one back."""
    if isinstance(arrays, StepStream):
        return ((n, arrays.shape_of(n)) for n in arrays)
    return ((n, a.shape) for n, a in arrays.items())


def _describe(exc: OSError, path: str) -> str:
    if exc.errno == errno.ENOSPC:
        return f"disk full while writing {path}"
    if exc.errno == errno.EDQUOT:
        return f"disk quota exceeded while writing {path}"
    return f"cannot write {path}: {exc.strerror or exc}"


def manifest_bytes(manifest: dict) -> bytes:
    """The on-disk manifest: everything but the steps; tokens of the prompt only; stamped with its crc32, padded."""
    disk = {k: v for k, v in manifest.items() if k != "steps"}
    if "tokens" in disk and "prompt_len" in disk:
        disk["tokens"] = disk["tokens"][: disk["prompt_len"]]
    return stamp_json(disk) + b" " * MANIFEST_PAD


def log_line(entry: dict) -> bytes:
    """One steps.jsonl line: the entry's compact JSON, stamped with its crc32, and a newline."""
    return stamp_json(entry) + b"\n"


def _rewrite_in_place(path: str, data: bytes) -> bool:
    """Overwrite an existing file with `data` padded to its size (no new disk blocks needed)."""
    try:
        size = os.path.getsize(path)
        if len(data.rstrip(b" ")) > size:
            return False
        with open(path, "r+b") as fh:
            fh.write(data.rstrip(b" ").ljust(size, b" "))
        return True
    except OSError:
        return False


class TraceWriter:
    """Appends steps to a trace directory. `add_step` returns at once when `background`."""

    def __init__(self, path: str, manifest: dict, background: bool = True):
        self.path = path  # where the trace ends up
        self.manifest = manifest
        self.manifest.setdefault("steps", [])
        self.manifest["schema_version"] = SCHEMA_VERSION  # the layout written is always the current one
        self._error: TraceWriteError | None = None
        self._lock = threading.Lock()
        self._queue: queue.Queue | None = None
        self._thread: threading.Thread | None = None
        self._log_fd: int | None = None
        self._log_size = 0
        if prepare_directory(path) == "trace":  # replaced only once the new run has a step
            parent = os.path.dirname(os.path.abspath(path))
            self.dir = tempfile.mkdtemp(prefix="." + os.path.basename(os.path.abspath(path)) + ".stepscope-new-", dir=parent)
        else:
            self.dir = path
        self._staged = self.dir != path
        self._write_manifest()
        self._open_log()
        if background:
            self._queue = queue.Queue(maxsize=8)
            self._thread = threading.Thread(target=self._run, name="stepscope-writer", daemon=True)
            self._thread.start()

    # -- public --------------------------------------------------------------------------------
    def add_step(self, arrays: dict[str, np.ndarray], entry: dict, token: dict | None = None) -> None:
        """Queue (or write) one step. `entry` gets file, bytes, checksum, aliases; `token` joins tokens."""
        self.raise_if_failed()
        if self._queue is None:
            self._guarded_write(arrays, entry, token)
        else:
            self._queue.put((arrays, entry, token))

    def open_stream(self, names: Iterable[str]) -> StepStream:
        """A step file to stream the next step into (see StepStream; `names`: what it may hold),
        once every queued step is on disk. Hand it to add_step when the step is complete."""
        self.flush()
        try:
            return StepStream(self.dir, header_room(names))
        except OSError as exc:
            raise self.stream_failed(exc) from None

    def stream_failed(self, exc: OSError, stream: StepStream | None = None) -> TraceWriteError:
        """The error to raise when streaming a step failed (a full disk): the trace keeps its
        complete steps and says it stopped on an error; the stream's temp file is removed."""
        if stream is not None:
            stream.abort()
        kept = len(self.manifest["steps"])
        self._error = TraceWriteError(f"{_describe(exc, os.path.join(self.path, step_filename(kept)))}; the trace keeps its {kept} complete steps")
        self._mark_error()
        return self._error

    def write_arrays(self, name: str, arrays: dict[str, np.ndarray]) -> str:
        """A side safetensors file of the trace (lens.safetensors), streamed from the arrays' memory,
        with each tensor's crc32 in its header; returns its checksum (computed like a step entry's).
        The lens file's checksum goes into the manifest (`model.lens.checksum`), rewritten at once."""
        crcs = [zlib.crc32(_bytes(a)) for a in arrays.values()]
        prefix = header_bytes(arrays, crcs)
        try:
            write_safetensors(os.path.join(self.dir, name), prefix, list(arrays.values()))
        except OSError as exc:
            self._mark_error()
            raise TraceWriteError(_describe(exc, os.path.join(self.path, name))) from None
        checksum = step_checksum(prefix, crcs)
        lens = (self.manifest.get("model") or {}).get("lens")
        if name == LENS_FILE and isinstance(lens, dict):
            with self._lock:
                lens["checksum"] = checksum
                self._write_manifest()
        return checksum

    def write_file(self, name: str, data: bytes) -> None:
        """A side file of the trace (tokenizer.json), atomically, where the steps go."""
        try:
            atomic_write_bytes(os.path.join(self.dir, name), data)
        except OSError as exc:
            self._mark_error()
            raise TraceWriteError(_describe(exc, os.path.join(self.path, name))) from None

    def update(self, **fields) -> None:
        """Set top-level manifest fields (e.g. finished, stop_reason) and rewrite the manifest."""
        self.flush()
        with self._lock:
            self.manifest.update(fields)
            self._write_manifest()

    def flush(self) -> None:
        """Wait until every queued step is on disk."""
        if self._queue is not None:
            self._queue.join()
        self.raise_if_failed()

    def close(self, **fields) -> None:
        """Flush, write final manifest fields, stop the thread. Safe to call twice."""
        try:
            if self._queue is not None:
                self._queue.join()
            if self._error is not None:
                self._mark_error()
            elif fields:
                self.update(**fields)
        finally:
            if self._thread is not None and self._queue is not None:
                self._queue.put(None)
                self._thread.join(timeout=30)
                self._thread = None
            if self._log_fd is not None:
                os.close(self._log_fd)
                self._log_fd = None
            if self._staged:  # no step was ever completed: the previous trace stays as it was
                shutil.rmtree(self.dir, ignore_errors=True)
                self._staged = False
                self.dir = self.path

    def raise_if_failed(self) -> None:
        if self._error is not None:
            raise self._error

    @property
    def background(self) -> bool:
        """Steps are written on a background thread: add_step returns before they are on disk."""
        return self._queue is not None

    @property
    def steps_written(self) -> int:
        return len(self.manifest["steps"])

    # -- internals -------------------------------------------------------------------------------
    def _run(self) -> None:
        q = self._queue
        assert q is not None  # set before the thread starts, never unset
        while True:
            item = q.get()
            try:
                if item is None:
                    return
                if self._error is None:
                    self._guarded_write(*item)
            except TraceWriteError:
                pass  # kept in self._error
            finally:
                q.task_done()

    def _guarded_write(self, arrays, entry, token) -> None:
        try:
            try:
                self._write_step(arrays, entry, token)
            finally:
                if isinstance(arrays, StepStream):
                    arrays.abort()  # a no-op once the file is in place
        except TraceWriteError as exc:
            self._error = exc
        except Exception as exc:  # never let the writer die silently
            self._error = TraceWriteError(f"writing step failed: {exc}")
        if self._error is not None:
            self._mark_error()
            raise self._error

    def _mark_error(self) -> None:
        """Best effort: the manifest on disk says the run stopped on an error."""
        self.manifest.update(finished=False, stop_reason="error")
        try:
            self._write_manifest()
        except TraceWriteError:
            pass

    def _write_step(self, arrays: dict[str, np.ndarray], entry: dict, token: dict | None) -> None:
        name = step_filename(entry["index"])
        fpath = os.path.join(self.dir, name)
        kept = len(self.manifest["steps"])
        entry = dict(entry)
        if entry.get("nonfinite") is None:  # the session scans its arrays on the way to the host
            entry["nonfinite"] = arrays.nonfinite + nonfinite_names(arrays.extra) if isinstance(arrays, StepStream) else nonfinite_names(arrays)
        if isinstance(entry.get("sampling"), dict):
            entry["sampling"] = finite_or_none(entry["sampling"])
        try:  # the reader's schema: never write a line it would refuse
            validate_entry(dict(entry, file=name, checksum="crc32:00000000"), kept, SCHEMA_VERSION)
        except TraceError as exc:
            raise TraceWriteError(f"refusing to write an invalid step entry: {exc}") from None
        try:
            size, checksum, aliases = arrays.finish(fpath) if isinstance(arrays, StepStream) else write_step_file(fpath, arrays)
        except OSError as exc:
            if isinstance(arrays, StepStream):
                arrays.abort()
            raise TraceWriteError(f"{_describe(exc, os.path.join(self.path, name))}; the trace keeps its {kept} complete steps") from None
        entry.update(file=name, bytes=size, checksum=checksum)
        if aliases:
            entry["aliases"] = aliases
        positions = tuple(entry["positions"])
        omitted = {n: rec for n, shape in shapes_of(arrays) if (rec := trimmed_rows(n, shape, positions))} if positions[1] - positions[0] > 1 else {}
        if omitted:  # a row limit trims prefill attention maps only (a decode step has one row)
            entry["omitted"] = omitted

        self._append(entry, kept)
        with self._lock:
            self.manifest["steps"].append(entry)
            if token is not None:
                self.manifest["tokens"].append(token)
        if self._staged:
            self._swap()

    def _swap(self) -> None:
        try:
            swap_in(self.dir, self.path)
        except OSError as exc:
            raise TraceWriteError(f"cannot replace {self.path}: {exc.strerror or exc}; the new trace is in {self.dir}") from None
        self.dir, self._staged = self.path, False

    def _open_log(self) -> None:
        try:
            self._log_fd = os.open(os.path.join(self.dir, STEP_LOG), os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_TRUNC, FILE_MODE)
        except OSError as exc:
            raise TraceWriteError(_describe(exc, os.path.join(self.path, STEP_LOG))) from None
        self._log_size = 0

    def _append(self, entry: dict, kept: int) -> None:
        """One line on steps.jsonl; a failed write is cut back so the log never holds half a line."""
        line = log_line(entry)
        fd = self._log_fd
        assert fd is not None  # open from __init__ until close()
        try:
            view = memoryview(line)
            while view:
                view = view[os.write(fd, view) :]
        except OSError as exc:
            try:
                os.ftruncate(fd, self._log_size)
            except OSError:
                pass
            raise TraceWriteError(f"{_describe(exc, os.path.join(self.path, STEP_LOG))}; the trace keeps its {kept} complete steps") from None
        self._log_size += len(line)

    def _write_manifest(self) -> None:
        mpath = os.path.join(self.dir, MANIFEST)
        data = manifest_bytes(self.manifest)
        try:
            atomic_write_bytes(mpath, data)
        except OSError as exc:
            if exc.errno in (errno.ENOSPC, errno.EDQUOT) and _rewrite_in_place(mpath, data):
                return
            kept = len(self.manifest.get("steps", []))
            raise TraceWriteError(f"{_describe(exc, os.path.join(self.path, MANIFEST))}; the trace keeps its {kept} complete steps") from None


def copy_trace(manifest: dict, src_dir: str, dst: str, sources: dict[str, str] | None = None) -> str:
    """Write a self-contained copy of a trace (its listed steps, tokenizer and lens file) to `dst`,
    with the same replace-only-when-complete rules as a recording. Each file is read from
    `sources[name]` when given (a branch's shared steps live in its parent), else from `src_dir`."""
    state = prepare_directory(dst)
    target = dst
    if state == "trace":
        target = tempfile.mkdtemp(prefix="." + os.path.basename(os.path.abspath(dst)) + ".stepscope-new-", dir=os.path.dirname(os.path.abspath(dst)))
    sources = sources or {}
    try:
        files = [e["file"] for e in manifest["steps"]] + list(SIDE_FILES)
        for name in files:
            src = sources.get(name, os.path.join(src_dir, name))
            if name in SIDE_FILES and not os.path.isfile(src):
                continue
            shutil.copyfile(src, os.path.join(target, name))
        atomic_write_bytes(os.path.join(target, STEP_LOG), b"".join(log_line(e) for e in manifest["steps"]))
        atomic_write_bytes(os.path.join(target, MANIFEST), manifest_bytes(dict(manifest, schema_version=SCHEMA_VERSION)))
        if target != dst:
            swap_in(target, dst)
    except OSError as exc:
        if target != dst:
            shutil.rmtree(target, ignore_errors=True)
        raise TraceWriteError(f"cannot save the trace to {dst}: {exc.strerror or exc}") from None
    return dst
