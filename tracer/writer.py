"""Writing a trace directory step by step, atomically, optionally on a background thread.

Order of operations for every step: arrays -> `step_NNNNN.safetensors` via temp file + rename,
then manifest.json (temp file + rename) lists the step. A kill between the two leaves an
unlisted step file, never a listed broken one. A full disk raises TraceWriteError and keeps
every step already listed.
"""

from __future__ import annotations

import errno
import os
import queue
import threading

import numpy as np
from safetensors.numpy import save as safetensors_save

from .trace_format import MANIFEST, TraceWriteError, atomic_write_bytes, atomic_write_json, step_filename


def prepare_directory(path: str) -> None:
    """Create the output directory (or accept an empty/previous trace one); one clear error otherwise."""
    try:
        os.makedirs(path, exist_ok=True)
    except OSError as exc:
        raise TraceWriteError(f"cannot create trace directory {path}: {exc.strerror}") from None
    if not os.access(path, os.W_OK):
        raise TraceWriteError(f"trace directory {path} is not writable")
    leftovers = [f for f in os.listdir(path) if not f.startswith(".")]
    if leftovers and MANIFEST not in leftovers:
        raise TraceWriteError(f"{path} exists and is not a trace directory; choose an empty or new directory")
    for f in leftovers:  # an earlier trace in the same place is replaced, not mixed
        if f in (MANIFEST, "tokenizer.json") or (f.startswith("step_") and f.endswith(".safetensors")):
            os.unlink(os.path.join(path, f))


def nonfinite_names(arrays: dict[str, np.ndarray]) -> list[str]:
    """Names holding NaN or inf (masked attention scores are -inf by design: only NaN/+inf count there)."""
    bad = []
    for name, a in arrays.items():
        if a.dtype.kind != "f" or a.size == 0:
            continue
        hi = a.max()  # NaN propagates through max/min: two reductions, no temporary array
        if name.endswith("hook_attn_scores"):
            if np.isnan(hi) or hi == np.inf:
                bad.append(name)
        elif not (np.isfinite(hi) and np.isfinite(a.min())):
            bad.append(name)
    return bad


def _describe(exc: OSError, path: str) -> str:
    if exc.errno == errno.ENOSPC:
        return f"disk full while writing {path}"
    if exc.errno == errno.EDQUOT:
        return f"disk quota exceeded while writing {path}"
    return f"cannot write {path}: {exc.strerror or exc}"


class TraceWriter:
    """Appends steps to a trace directory. `add_step` returns at once when `background`."""

    def __init__(self, path: str, manifest: dict, background: bool = True):
        self.path = path
        self.manifest = manifest
        self.manifest.setdefault("steps", [])
        self._error: TraceWriteError | None = None
        self._lock = threading.Lock()
        self._queue: queue.Queue | None = None
        self._thread: threading.Thread | None = None
        prepare_directory(path)
        self._write_manifest()
        if background:
            self._queue = queue.Queue(maxsize=8)
            self._thread = threading.Thread(target=self._run, name="stepscope-writer", daemon=True)
            self._thread.start()

    # -- public --------------------------------------------------------------------------------
    def add_step(self, arrays: dict[str, np.ndarray], entry: dict, token: dict | None = None) -> None:
        """Queue (or write) one step. `entry` gets "file" and "bytes"; `token` joins manifest tokens."""
        self.raise_if_failed()
        if self._queue is None:
            self._write_step(arrays, entry, token)
        else:
            self._queue.put((arrays, entry, token))

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
            if fields and self._error is None:
                self.update(**fields)
            else:
                self.flush()
        finally:
            if self._thread is not None and self._queue is not None:
                self._queue.put(None)
                self._thread.join(timeout=30)
                self._thread = None

    def raise_if_failed(self) -> None:
        if self._error is not None:
            raise self._error

    @property
    def steps_written(self) -> int:
        return len(self.manifest["steps"])

    # -- internals -------------------------------------------------------------------------------
    def _run(self) -> None:
        while True:
            item = self._queue.get()
            try:
                if item is None:
                    return
                if self._error is None:
                    self._write_step(*item)
            except TraceWriteError as exc:
                self._error = exc
            except Exception as exc:  # never let the writer thread die silently
                self._error = TraceWriteError(f"writing step failed: {exc}")
            finally:
                self._queue.task_done()

    def _write_step(self, arrays: dict[str, np.ndarray], entry: dict, token: dict | None) -> None:
        index = entry["index"]
        name = step_filename(index)
        fpath = os.path.join(self.path, name)
        entry = dict(entry, nonfinite=nonfinite_names(arrays))
        payload = safetensors_save({k: np.ascontiguousarray(v) for k, v in arrays.items()})
        try:
            atomic_write_bytes(fpath, payload)
        except OSError as exc:
            kept = len(self.manifest["steps"])
            raise TraceWriteError(f"{_describe(exc, fpath)}; the trace keeps its {kept} complete steps") from None
        with self._lock:
            entry = dict(entry, file=name, bytes=len(payload))
            self.manifest["steps"].append(entry)
            if token is not None:
                self.manifest["tokens"].append(token)
            try:
                self._write_manifest()
            except TraceWriteError:
                self.manifest["steps"].pop()
                if token is not None:
                    self.manifest["tokens"].pop()
                raise

    def _write_manifest(self) -> None:
        mpath = os.path.join(self.path, MANIFEST)
        try:
            atomic_write_json(mpath, self.manifest)
        except OSError as exc:
            kept = len(self.manifest.get("steps", [])) - 1
            raise TraceWriteError(f"{_describe(exc, mpath)}; the trace keeps its {max(kept, 0)} complete steps") from None
