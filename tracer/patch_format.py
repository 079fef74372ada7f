"""Activation patching results: the pair check, the clean rows, and the result file (numpy only).

A sweep reruns the corrupted prompt with one activation restored from the clean trace per cell
and reports the restored metric (tracer/patching.py computes it; this module never imports torch):

    check_pair(clean, corrupt, "resid_pre", step=0)      # PatchingError (one line) when the pair cannot be swept
    rows = clean_rows(clean, "resid_pre", step=0)        # [layers, positions, d_model] from the clean trace
    result.save(result_path(clean.path, corrupt.path, "resid_pre", "patch", 0))
    load_result(path)                                    # validated: untrusted input, PatchingError when bad

The metric is the logit difference between the clean and the corrupted run's chosen tokens at the
step's predicting position, normalised so 0 = the corrupted run and 1 = the clean run.
"""

from __future__ import annotations

import json
import math
import os
import re
import stat
import tempfile
from dataclasses import dataclass, field

import numpy as np

from .names import block_name
from .reader import parse_json
from .trace_format import TraceError

# site -> block-local recorded name patched there
SITES = {"resid_pre": "hook_resid_pre", "attn_out": "hook_attn_out", "mlp_out": "hook_mlp_out", "head": "attn.hook_z"}
METHODS = ("patch", "attribution")
METRIC = "logit_diff"
FORMAT = "stepscope-patching"
VERSION = 1
RESULTS_DIR = "patching"
MAX_RESULT_BYTES = 64 << 20
MAX_DIM = 1 << 16
_SAFE = re.compile(r"[^A-Za-z0-9._-]+")


class PatchingError(ValueError):
    """A pair of traces, a site or a result file that cannot be used (one line for the user)."""


@dataclass(frozen=True)
class Pair:
    """What a sweep of (clean, corrupt) at a step needs from the two traces."""

    site: str
    step: int
    length: int  # P: the positions the step's prediction reads, [0, P)
    clean_ids: list[int]  # [P] token ids of the clean run
    corrupt_ids: list[int]  # [P] token ids of the corrupted run
    clean_token: dict  # {"id", "text"}: the clean run's choice at the step
    corrupt_token: dict  # the corrupted run's choice
    n_layers: int
    n_heads: int

    @property
    def name(self) -> str:
        return SITES[self.site]

    @property
    def columns(self) -> int:
        return self.n_heads if self.site == "head" else self.length


def _text(token: dict) -> str:
    return str(token.get("text", ""))


def check_pair(clean, corrupt, site: str, step: int) -> Pair:
    """The pair's facts, or PatchingError: different models, different prompt lengths, a step beyond
    either trace, a site not recorded, both runs choosing the same token."""
    if site not in SITES:
        raise PatchingError(f"unknown site {site!r}: sites are {', '.join(SITES)}")
    a, b = clean.model, corrupt.model
    for key in ("name", "n_layers", "d_model", "n_heads", "vocab_size"):
        if a.get(key) != b.get(key):
            raise PatchingError(f"the traces are of different models ({a.get('name')!r} and {b.get('name')!r}; {key} differs)")
    if clean.prompt_len != corrupt.prompt_len:
        raise PatchingError(f"the prompts have different token lengths ({clean.prompt_len} and {corrupt.prompt_len}); "
                            "patching needs prompts of the same length")
    if not isinstance(step, int) or step < 0:
        raise PatchingError(f"--step must be >= 0, got {step}")
    have = min(len(clean.steps), len(corrupt.steps))
    length = clean.prompt_len + step
    if step >= have or len(clean.tokens) <= length or len(corrupt.tokens) <= length:
        raise PatchingError(f"step {step} is beyond the traces (clean has {len(clean.steps)} steps, corrupted {len(corrupt.steps)})")
    n_layers, n_heads = int(a.get("n_layers") or 0), int(a.get("n_heads") or 0)
    name = SITES[site]
    for s in range(step + 1):
        names = set(clean.steps[s].names)
        missing = [block_name(layer, name) for layer in range(n_layers) if block_name(layer, name) not in names]
        if missing:
            raise PatchingError(f"site {site}: {missing[0]} was not recorded in step {s} of {clean.path}")
    ct, rt = clean.tokens[length], corrupt.tokens[length]
    if int(ct["id"]) == int(rt["id"]):
        raise PatchingError(f"both runs chose {_text(ct)!r} at step {step}: the logit difference is 0 there; pick another step")
    return Pair(site, step, length, [int(t["id"]) for t in clean.tokens[:length]], [int(t["id"]) for t in corrupt.tokens[:length]],
                {"id": int(ct["id"]), "text": _text(ct)}, {"id": int(rt["id"]), "text": _text(rt)}, n_layers, n_heads)


def model_spec(trace) -> str:
    """What to load for a trace's model: its recorded source (a hub id, a directory, a .gguf) when that
    is still there or names no local path, else its name (the embedded model's name loads it)."""
    model = trace.model
    source, name = model.get("source"), model.get("name")
    if isinstance(source, str) and source:
        local = os.path.isabs(source) or source.startswith(".") or source.endswith(".gguf")
        if os.path.exists(source) or not local:
            return source
    if isinstance(name, str) and name:
        return name
    raise PatchingError(f"{trace.path}: the manifest names no model to load")


def clean_rows(clean, pair: Pair) -> np.ndarray:
    """The clean run's recorded rows a sweep restores, float32: [layers, positions, d_model] for the
    residual, attention and MLP sites; [layers, n_heads, d_head] (z at the last position) for heads."""
    name = pair.name
    if pair.site == "head":
        last = pair.length - 1
        out = []
        for layer in range(pair.n_layers):
            s = clean.steps[0 if last < clean.prompt_len else last - clean.prompt_len + 1]
            a, _ = s.positions
            out.append(np.asarray(s[block_name(layer, name)][last - a], dtype=np.float32))  # [n_heads, d_head]
        return np.stack(out)
    out = []
    for layer in range(pair.n_layers):
        rows = []
        for s in clean.steps[: pair.step + 1]:
            a, b = s.positions
            rows.append(np.asarray(s[block_name(layer, name)], dtype=np.float32)[: min(b, pair.length) - a])
        out.append(np.concatenate(rows)[: pair.length])  # [P, d_model]
    return np.stack(out)


# -- results ----------------------------------------------------------------------------------
@dataclass
class PatchingResult:
    """values[layer][column]: the normalised metric with that cell restored (columns: positions, or heads)."""

    site: str
    step: int
    method: str
    tokens: list[str]  # [P] clean token texts
    corrupt_tokens: list[str]  # [P] corrupted token texts
    values: np.ndarray  # [layers, columns] float64 (NaN: not computed)
    clean_token: dict
    corrupt_token: dict
    clean_metric: float  # logit difference of the clean run
    corrupt_metric: float  # of the corrupted run
    model: str = ""
    clean: str = ""  # the traces' paths
    corrupt: str = ""
    seconds: float | None = None
    extra: dict = field(default_factory=dict)  # e.g. {"forwards": n}

    @property
    def layers(self) -> int:
        return int(self.values.shape[0])

    @property
    def positions(self) -> int:
        return len(self.tokens)

    @property
    def columns(self) -> str:
        return "heads" if self.site == "head" else "positions"

    def to_dict(self) -> dict:
        values = [[None if not math.isfinite(float(v)) else float(v) for v in row] for row in self.values]
        return {
            "format": FORMAT, "version": VERSION,
            "site": self.site, "step": self.step, "method": self.method, "metric": METRIC,
            "tokens": list(self.tokens), "corrupt_tokens": list(self.corrupt_tokens),
            "layers": self.layers, "positions": self.positions, "columns": self.columns,
            "values": values,
            "clean_token": dict(self.clean_token), "corrupt_token": dict(self.corrupt_token),
            "clean_metric": float(self.clean_metric), "corrupt_metric": float(self.corrupt_metric),
            "model": self.model, "clean": self.clean, "corrupt": self.corrupt,
            "seconds": self.seconds, "extra": dict(self.extra),
        }

    def save(self, path: str) -> str:
        """Write the result as JSON (atomically: a reader never sees half a file); returns the path."""
        folder = os.path.dirname(path) or "."
        os.makedirs(folder, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".patching-", suffix=".json", dir=folder)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                json.dump(self.to_dict(), f, ensure_ascii=False)
            os.replace(tmp, path)
        except BaseException:
            if os.path.exists(tmp):
                os.unlink(tmp)
            raise
        return path

    def cell(self, layer: int, column: int) -> float:
        return float(self.values[layer, column])


def result_name(corrupt_path: str, site: str, method: str, step: int) -> str:
    base = _SAFE.sub("_", os.path.basename(os.path.normpath(corrupt_path))).strip("._") or "corrupt"
    return f"{base[:80]}-{site}-{method}-s{step}.json"


def result_path(clean_path: str, corrupt_path: str, site: str, method: str, step: int) -> str:
    """Where a sweep's result is kept: CLEAN/patching/<corrupt-name>-<site>-<method>-s<step>.json."""
    return os.path.join(clean_path, RESULTS_DIR, result_name(corrupt_path, site, method, step))


def _bad(path: str, what: str) -> PatchingError:
    return PatchingError(f"{path}: not a usable patching result ({what})")


def _read_bytes(path: str) -> bytes:
    flags = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0)
    try:
        fd = os.open(path, flags)
    except FileNotFoundError:
        raise
    except OSError as exc:
        raise _bad(path, exc.strerror or "cannot open") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise _bad(path, "not a regular file")
        if st.st_size > MAX_RESULT_BYTES:
            raise _bad(path, f"{st.st_size} bytes, limit {MAX_RESULT_BYTES}")
        os.set_blocking(fd, True)
        chunks = []
        while True:
            chunk = os.read(fd, 1 << 20)
            if not chunk:
                break
            chunks.append(chunk)
        return b"".join(chunks)
    finally:
        os.close(fd)


def _int(obj: dict, key: str, path: str, low: int = 0, high: int = MAX_DIM) -> int:
    v = obj.get(key)
    if type(v) is not int or not low <= v <= high:
        raise _bad(path, f"{key} must be an integer in [{low}, {high}]")
    return v


def _str(obj: dict, key: str, path: str, limit: int = 4096) -> str:
    v = obj.get(key, "")
    if not isinstance(v, str) or len(v) > limit:
        raise _bad(path, f"{key} must be a string")
    return v


def _num(v, key: str, path: str, allow_none: bool = False) -> float:
    if v is None and allow_none:
        return math.nan
    if type(v) not in (int, float) or not math.isfinite(v):
        raise _bad(path, f"{key} must be a finite number")
    return float(v)


def _token(obj: dict, key: str, path: str) -> dict:
    t = obj.get(key)
    if not isinstance(t, dict) or type(t.get("id")) is not int or not isinstance(t.get("text"), str) or len(t["text"]) > 4096:
        raise _bad(path, f"{key} must be {{\"id\": int, \"text\": str}}")
    return {"id": t["id"], "text": t["text"]}


def _texts(obj: dict, key: str, n: int, path: str) -> list[str]:
    v = obj.get(key)
    if not isinstance(v, list) or len(v) != n or not all(isinstance(t, str) and len(t) <= 4096 for t in v):
        raise _bad(path, f"{key} must list {n} token texts")
    return list(v)


def load_result(path: str) -> PatchingResult:
    """A saved result, every field checked (the file is untrusted); PatchingError naming what is wrong,
    FileNotFoundError when there is none."""
    try:
        obj = parse_json(_read_bytes(path), path)
    except TraceError as exc:
        raise _bad(path, str(exc).removeprefix(f"{path}: ")) from None
    if not isinstance(obj, dict) or obj.get("format") != FORMAT:
        raise _bad(path, f"no \"format\": \"{FORMAT}\"")
    if obj.get("version") != VERSION:
        raise _bad(path, f"version {obj.get('version')!r}, this stepscope reads {VERSION}")
    site, method = obj.get("site"), obj.get("method")
    if site not in SITES:
        raise _bad(path, f"site must be one of {', '.join(SITES)}")
    if method not in METHODS:
        raise _bad(path, f"method must be one of {', '.join(METHODS)}")
    if obj.get("metric") != METRIC:
        raise _bad(path, f"metric must be {METRIC}")
    step = _int(obj, "step", path, 0, 1 << 30)
    layers = _int(obj, "layers", path, 1)
    positions = _int(obj, "positions", path, 1)
    tokens = _texts(obj, "tokens", positions, path)
    corrupt_tokens = _texts(obj, "corrupt_tokens", positions, path)
    values = obj.get("values")
    if not isinstance(values, list) or len(values) != layers or not values or not all(isinstance(r, list) for r in values):
        raise _bad(path, f"values must be {layers} rows")
    width = len(values[0])
    if width < 1 or (site != "head" and width != positions) or any(len(r) != width for r in values) or width > MAX_DIM:
        raise _bad(path, "values rows must all have one value per " + ("head" if site == "head" else "position"))
    grid = np.array([[_num(v, "values", path, allow_none=True) for v in r] for r in values], dtype=np.float64)
    seconds = obj.get("seconds")
    if seconds is not None:
        seconds = _num(seconds, "seconds", path)
    extra = obj.get("extra", {})
    if not isinstance(extra, dict) or not all(isinstance(k, str) and type(v) in (int, float, str) for k, v in extra.items()):
        raise _bad(path, "extra must map names to numbers or strings")
    return PatchingResult(
        site=site, step=step, method=method, tokens=tokens, corrupt_tokens=corrupt_tokens, values=grid,
        clean_token=_token(obj, "clean_token", path), corrupt_token=_token(obj, "corrupt_token", path),
        clean_metric=_num(obj.get("clean_metric"), "clean_metric", path),
        corrupt_metric=_num(obj.get("corrupt_metric"), "corrupt_metric", path),
        model=_str(obj, "model", path), clean=_str(obj, "clean", path), corrupt=_str(obj, "corrupt", path),
        seconds=seconds, extra=extra,
    )


def saved_result(clean_path: str, corrupt_path: str, site: str, method: str, step: int) -> PatchingResult | None:
    """The result saved for this sweep, None when there is none (a bad file: PatchingError)."""
    try:
        return load_result(result_path(clean_path, corrupt_path, site, method, step))
    except FileNotFoundError:
        return None


def correlation(a: PatchingResult, b: PatchingResult) -> float:
    """Pearson correlation over the cells both computed (e.g. attribution against real patching)."""
    x, y = a.values.ravel(), b.values.ravel()
    keep = np.isfinite(x) & np.isfinite(y)
    if keep.sum() < 2 or np.std(x[keep]) == 0 or np.std(y[keep]) == 0:
        return math.nan
    return float(np.corrcoef(x[keep], y[keep])[0, 1])
