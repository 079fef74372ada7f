"""The one typed schema of a trace: manifest, step entries, tokens, sampling records.

The TypedDicts document the fields (the writer builds these, the reader checks them); the
`validate_*` functions check what a trace from elsewhere claims before anything trusts it:
types, required keys, finite numbers, ranges, string lengths, counts. Every failure is a
TraceError naming the field, e.g. `manifest.model.n_layers: expected an integer in [1, 4096]`.
Unknown extra keys are accepted (newer writers), known ones must be right.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any, TypedDict

from .safe_io import valid_name
from .trace_format import LENS_FILE, READABLE_VERSIONS, SCHEMA, TOKENIZER_FILE, TraceError

MAX_MANIFEST_BYTES = 64 * 1024 * 1024
MAX_LOG_BYTES = 512 * 1024 * 1024
MAX_LOG_LINE = 4 * 1024 * 1024  # one steps.jsonl line (read with a bounded readline: a longer one is refused unread)
MAX_TOKENIZER_BYTES = 1 << 30
MAX_DEPTH = 32
MAX_STR = 4096  # names, facts, token texts
MAX_PROMPT = 4 * 1024 * 1024
MAX_LIST = 1_000_000
MAX_LAYERS = 4096
MAX_DIM = 1 << 24
MAX_POSITIONS = 1 << 24
MAX_STEP_BYTES = 1 << 40
MAX_ALIASES = 100_000  # a step's aliases; the vocabulary for its layer count bounds them further (tracer/consistency.py)
STORED_DTYPES = ("float32", "float16", "bfloat16", "float64")
CHECKSUM = re.compile(r"crc32:[0-9a-f]{8}\Z")


class TokenRecord(TypedDict, total=False):
    id: int
    text: str
    piece: str
    special: bool
    position: int


class SamplingStage(TypedDict):
    name: str
    kept: int


class SamplingRecord(TypedDict, total=False):
    greedy: bool
    temperature: float
    top_k: int
    top_p: float
    min_p: float
    chosen_id: int
    chosen_rank: int
    chosen_prob: float
    chosen_raw_prob: float
    chosen_temp_prob: float
    top1_id: int
    top1_prob: float
    entropy: float
    raw_entropy: float
    nucleus_size: int
    nucleus_mass: float
    stages: list[SamplingStage]


class StepEntry(TypedDict, total=False):
    index: int
    kind: str  # "prefill" | "decode"
    positions: list[int]  # [start, end)
    token: TokenRecord
    sampling: SamplingRecord
    seconds: float | None
    nonfinite: list[str]
    file: str  # step_NNNNN.safetensors
    bytes: int
    checksum: str  # "crc32:xxxxxxxx" of the whole step file (schema 2)
    aliases: dict[str, str]  # name -> stored name with identical bytes (schema 2)
    omitted: dict[str, dict]  # name -> {"rows": [r0, r1], "reason", "recompute"} (schema 2)
    settings: dict[str, Any]  # after a live settings change: do_sample, temperature, ..., seed, max_new_tokens


class ModelFacts(TypedDict, total=False):
    name: str
    family: str
    generic_fallback: bool  # traced by the generic fallback (no adapter for the architecture)
    layout: dict[str, Any]  # projections: {"qkv": "separate" | "fused" | "fused_heads" | "conv1d", "qkv_bias",
    #                         "out_bias", "mlp_fused", "conv1d": bool}
    norm_topk_prob: bool  # mixture of experts: the chosen experts' weights are renormalised to sum 1
    architecture: str
    n_layers: int
    d_model: int
    n_heads: int
    n_kv_heads: int
    d_head: int
    d_mlp: int
    vocab_size: int
    n_ctx: int | None
    sliding_window: int | None
    params: dict[str, int]
    norm_inputs: dict[str, dict]  # norm prefix -> {"input": recorded name of its input, "kind": "rmsnorm" | "layernorm"}


class Manifest(TypedDict, total=False):
    schema: str
    schema_version: int
    created: str
    model: ModelFacts
    tokenizer: dict
    prompt: str
    chat: bool
    prompt_len: int
    generation: dict
    dtype: dict
    device: str
    record: list[str]
    tokens: list[TokenRecord]  # schema 2: prompt tokens; schema 1: prompt + generated
    steps: list[StepEntry]  # schema 1 only; schema 2 keeps them in steps.jsonl
    finished: bool
    stop_reason: str | None


# -- primitive checks -------------------------------------------------------------------------------
def _fail(field: str, what: str, value: Any) -> TraceError:
    shown = repr(value)
    shown = shown if len(shown) <= 40 else shown[:37] + "..."
    return TraceError(f"{field}: expected {what}, got {shown}")


def want_int(field: str, v: Any, lo: int = 0, hi: int = 1 << 62) -> int:
    if type(v) is not int or not lo <= v <= hi:
        raise _fail(field, f"an integer in [{lo}, {hi}]", v)
    return v


def want_num(field: str, v: Any, lo: float = -math.inf, hi: float = math.inf) -> float:
    if type(v) not in (int, float) or not math.isfinite(v) or not lo <= v <= hi:
        raise _fail(field, f"a finite number in [{lo:g}, {hi:g}]", v)
    return float(v)


def want_str(field: str, v: Any, max_len: int = MAX_STR) -> str:
    if type(v) is not str or len(v) > max_len:
        raise _fail(field, f"a string of at most {max_len} characters", v)
    return v


def want_bool(field: str, v: Any) -> bool:
    if type(v) is not bool:
        raise _fail(field, "true or false", v)
    return v


def want_dict(field: str, v: Any) -> dict:
    if type(v) is not dict:
        raise _fail(field, "an object", v)
    return v


def want_list(field: str, v: Any, max_len: int = MAX_LIST) -> list:
    if type(v) is not list or len(v) > max_len:
        raise _fail(field, f"a list of at most {max_len} items", v)
    return v


def _opt(check, field: str, v: Any, *args):
    return None if v is None else check(field, v, *args)


def _validate_settings(d: dict, field: str) -> None:
    """Generation settings: names to numbers, short strings, bools or null."""
    for key, v in d.items():
        want_str(field, key, 100)
        if type(v) in (int, float):
            want_num(f"{field}.{key}", v)
        elif type(v) is str:
            want_str(f"{field}.{key}", v, 200)
        elif v is not None and type(v) is not bool:
            raise _fail(f"{field}.{key}", "a number, string, bool or null", v)


def check_depth(obj: Any, field: str, limit: int = MAX_DEPTH) -> None:
    """Nesting depth of parsed JSON, iteratively (a deep document cannot recurse the checker)."""
    stack = [(obj, 1)]
    while stack:
        node, depth = stack.pop()
        if depth > limit:
            raise TraceError(f"{field}: nested deeper than {limit} levels")
        if type(node) is dict:
            stack.extend((v, depth + 1) for v in node.values())
        elif type(node) is list:
            stack.extend((v, depth + 1) for v in node)


def _no_duplicates(pairs):
    out = {}
    for k, v in pairs:
        if k in out:
            raise ValueError(f"duplicate key {k!r}")
        out[k] = v
    return out


def parse_json(raw: bytes, label: str) -> Any:
    """JSON from untrusted bytes: UTF-8, no duplicate keys, bounded depth; TraceError otherwise."""
    try:
        obj = json.loads(raw.decode("utf-8"), object_pairs_hook=_no_duplicates)
    except RecursionError:
        raise TraceError(f"{label}: nested too deeply") from None
    except (UnicodeDecodeError, ValueError) as exc:
        raise TraceError(f"{label}: not valid JSON ({str(exc).splitlines()[0][:80]})") from None
    check_depth(obj, label)
    return obj


# -- records ------------------------------------------------------------------------------------------
_MODEL_INTS = {"n_layers": (1, MAX_LAYERS), "d_model": (1, MAX_DIM), "n_heads": (1, 65536), "n_kv_heads": (1, 65536),
               "d_head": (1, 65536), "d_mlp": (0, MAX_DIM), "vocab_size": (1, MAX_DIM)}
_MODEL_OPT_INTS = {"n_ctx": (1, 1 << 30), "sliding_window": (0, 1 << 30), "rotary_dim": (0, 65536),
                   "n_experts": (0, 1 << 20), "experts_per_token": (0, 1 << 20)}
_MODEL_STRS = ("name", "family", "architecture", "model_type", "source", "act", "norm", "positional", "weights")


def validate_model(m: Any, field: str = "manifest.model") -> dict:
    want_dict(field, m)
    for key, (lo, hi) in _MODEL_INTS.items():
        if key not in m:
            raise TraceError(f"{field}.{key}: missing")
        want_int(f"{field}.{key}", m[key], lo, hi)
    if m["n_kv_heads"] > m["n_heads"]:
        raise _fail(f"{field}.n_kv_heads", f"at most n_heads ({m['n_heads']})", m["n_kv_heads"])
    for key, (lo, hi) in _MODEL_OPT_INTS.items():
        _opt(want_int, f"{field}.{key}", m.get(key), lo, hi)
    for key in _MODEL_STRS:
        _opt(want_str, f"{field}.{key}", m.get(key))
    for key in ("gated_mlp", "parallel_attn_mlp"):
        _opt(want_bool, f"{field}.{key}", m.get(key))
    for key in ("not_applicable", "missing_names"):
        for i, s in enumerate(_opt(want_list, f"{field}.{key}", m.get(key), 1000) or []):
            want_str(f"{field}.{key}[{i}]", s, 200)
    layer_types = _opt(want_list, f"{field}.layer_types", m.get("layer_types"), m["n_layers"])
    for i, s in enumerate(layer_types or []):
        want_str(f"{field}.layer_types[{i}]", s, 200)
    flow = m.get("data_flow")
    for i, s in enumerate([flow] if isinstance(flow, str) else (_opt(want_list, f"{field}.data_flow", flow, 100) or [])):
        want_str(f"{field}.data_flow[{i}]", s, 1000)
    lens = _opt(want_dict, f"{field}.lens", m.get("lens"))
    if lens is not None:  # the lazy logit lens (tracer/lens.py)
        if lens.get("file", LENS_FILE) != LENS_FILE:
            raise _fail(f"{field}.lens.file", f'"{LENS_FILE}"', lens.get("file"))
        if lens.get("norm") not in ("rmsnorm", "layernorm"):
            raise _fail(f"{field}.lens.norm", '"rmsnorm" or "layernorm"', lens.get("norm"))
        want_num(f"{field}.lens.eps", lens.get("eps"), 0.0, 1.0)
        _opt(want_num, f"{field}.lens.weight_offset", lens.get("weight_offset"), -10.0, 10.0)
        _opt(want_num, f"{field}.lens.softcap", lens.get("softcap"), 1e-6, 1e9)
        _opt(want_int, f"{field}.lens.k", lens.get("k"), 1, 10_000)
        checksum = lens.get("checksum")  # of lens.safetensors, like a step entry's (absent in traces written before it)
        if checksum is not None and (type(checksum) is not str or not CHECKSUM.match(checksum)):
            raise _fail(f"{field}.lens.checksum", '"crc32:" and 8 hex digits', checksum)
        if lens.get("n_layers", m["n_layers"]) != m["n_layers"]:
            raise _fail(f"{field}.lens.n_layers", f"n_layers ({m['n_layers']})", lens.get("n_layers"))
    norms = _opt(want_dict, f"{field}.norm_inputs", m.get("norm_inputs")) or {}
    if len(norms) > 4 * MAX_LAYERS + 16:
        raise _fail(f"{field}.norm_inputs", f"at most {4 * MAX_LAYERS + 16} norms", len(norms))
    for prefix, spec in norms.items():  # hook_normalized computed by the reader: input / hook_scale
        want_str(f"{field}.norm_inputs", prefix, 200)
        want_dict(f"{field}.norm_inputs.{prefix[:60]}", spec)
        want_str(f"{field}.norm_inputs.{prefix[:60]}.input", spec.get("input"), 200)
        if spec.get("kind") not in ("rmsnorm", "layernorm"):
            raise _fail(f"{field}.norm_inputs.{prefix[:60]}.kind", '"rmsnorm" or "layernorm"', spec.get("kind"))
    params = _opt(want_dict, f"{field}.params", m.get("params")) or {}
    for key, v in params.items():
        if key == "tied_embeddings":
            want_bool(f"{field}.params.tied_embeddings", v)
        elif v is not None:
            want_int(f"{field}.params.{want_str(f'{field}.params', key, 100)}", v, 0, 1 << 50)
    return m


def _num_ok(v: Any, lo: float, hi: float) -> bool:
    """Fast check (finite bounds: NaN and inf fail the comparison); the want_* call names the field."""
    return (type(v) is float or type(v) is int) and lo <= v <= hi


def validate_token(t: Any, field: str) -> dict:
    want_dict(field, t)
    for key in ("id", "text"):
        if key not in t:
            raise TraceError(f"{field}.{key}: missing")
    v = t["id"]
    if not (type(v) is int and 0 <= v <= 1 << 31):
        want_int(f"{field}.id", v, 0, 1 << 31)
    v = t["text"]
    if not (type(v) is str and len(v) <= 1024):
        want_str(f"{field}.text", v, 1024)
    v = t.get("piece")
    if v is not None and not (type(v) is str and len(v) <= 1024):
        want_str(f"{field}.piece", v, 1024)
    v = t.get("special")
    if v is not None and type(v) is not bool:
        want_bool(f"{field}.special", v)
    v = t.get("position")
    if v is not None and not (type(v) is int and 0 <= v <= MAX_POSITIONS):
        want_int(f"{field}.position", v, 0, MAX_POSITIONS)
    return t


_PMAX = 1.0 + 1e-6
_SAMPLING_NUMS = tuple((k, 0.0, _PMAX) for k in ("chosen_prob", "chosen_raw_prob", "chosen_temp_prob", "top1_prob", "nucleus_mass", "top_p", "min_p")) + (
    ("entropy", 0.0, 1e6), ("raw_entropy", 0.0, 1e6), ("temperature", 0.0, 1e6))
_SAMPLING_INTS = ("chosen_id", "chosen_rank", "top1_id", "nucleus_size", "top_k")


SAMPLING_RANGES = {k: (lo, hi) for k, lo, hi in _SAMPLING_NUMS}
SAMPLING_INT_KEYS = frozenset(_SAMPLING_INTS)


def validate_sampling(s: Any, field: str) -> dict:
    want_dict(field, s)
    for key, v in s.items():  # one pass: a trace may hold hundreds of thousands of these
        bounds = SAMPLING_RANGES.get(key)
        if bounds is not None:
            if v is not None and not _num_ok(v, *bounds):
                want_num(f"{field}.{key}", v, *bounds)
        elif key in SAMPLING_INT_KEYS:
            if v is not None and not (type(v) is int and 0 <= v <= 1 << 31):
                want_int(f"{field}.{key}", v, 0, 1 << 31)
        elif key == "greedy":
            _opt(want_bool, f"{field}.greedy", v)
        elif key == "stages":
            if v is None:
                continue
            want_list(f"{field}.stages", v, 64)
            for i, st in enumerate(v):
                if not (type(st) is dict and type(st.get("name")) is str and len(st["name"]) <= 64
                        and type(st.get("kept")) is int and 0 <= st["kept"] <= MAX_DIM):
                    want_dict(f"{field}.stages[{i}]", st)
                    want_str(f"{field}.stages[{i}].name", st.get("name"), 64)
                    want_int(f"{field}.stages[{i}].kept", st.get("kept"), 0, MAX_DIM)
        elif type(v) in (dict, list):
            check_depth(v, f"{field}.{key}", MAX_DEPTH - 2)
    return s


def finite_or_none(record: dict) -> dict:
    """A sampling record with every non-finite number replaced by null (a NaN logit must not make
    the whole trace unreadable; the step's `nonfinite` list says where it came from)."""
    return {k: (None if type(v) is float and not math.isfinite(v) else v) for k, v in record.items()}


_ENTRY_KEYS = frozenset(StepEntry.__annotations__)


def validate_entry(e: Any, index: int, version: int, field: str | None = None) -> dict:
    """One step entry; `index` is its position in the step list (entries must be in order)."""
    field = field or f"steps[{index}]"
    want_dict(field, e)
    for key, value in e.items():  # keys this schema does not know: bounded nesting, nothing else
        if key not in _ENTRY_KEYS and type(value) in (dict, list):
            check_depth(value, f"{field}.{key}", MAX_DEPTH - 1)
    for key in ("index", "positions", "token", "sampling", "file"):
        if key not in e:
            raise TraceError(f"{field}.{key}: missing")
    v = e["index"]
    if not (type(v) is int and v == index <= MAX_LIST) and want_int(f"{field}.index", v, 0, MAX_LIST) != index:
        raise _fail(f"{field}.index", f"{index} (steps in order)", v)
    kind = e.get("kind", "prefill" if index == 0 else "decode")
    if kind not in ("prefill", "decode"):
        raise _fail(f"{field}.kind", '"prefill" or "decode"', kind)
    pos = e["positions"]
    if type(pos) is list and len(pos) == 2 and type(pos[0]) is int and type(pos[1]) is int and 0 <= pos[0] < pos[1] <= MAX_POSITIONS:
        start = pos[0]  # (the checks below name the field when this fast one fails)
    else:
        want_list(f"{field}.positions", pos, 2)
        if len(pos) != 2:
            raise _fail(f"{field}.positions", "[start, end]", pos)
        start = want_int(f"{field}.positions[0]", pos[0], 0, MAX_POSITIONS)
        want_int(f"{field}.positions[1]", pos[1], start + 1, MAX_POSITIONS)
    validate_token(e["token"], f"{field}.token")
    validate_sampling(e["sampling"], f"{field}.sampling")
    if e.get("settings") is not None:  # settings changed live: what this step ran with
        _validate_settings(want_dict(f"{field}.settings", e["settings"]), f"{field}.settings")
    v = e.get("seconds")
    if v is not None and not _num_ok(v, 0.0, 1e9):
        want_num(f"{field}.seconds", v, 0.0, 1e9)
    v = e.get("nonfinite")
    if v is not None and v != []:
        for i, n in enumerate(want_list(f"{field}.nonfinite", v, 100_000)):
            want_str(f"{field}.nonfinite[{i}]", n, 200)
    if not valid_name(e["file"]) or not e["file"].startswith("step_"):
        raise _fail(f"{field}.file", "a name like step_00001.safetensors", e["file"])
    v = e.get("bytes")
    if v is not None and not (type(v) is int and 0 <= v <= MAX_STEP_BYTES):
        want_int(f"{field}.bytes", v, 0, MAX_STEP_BYTES)
    checksum = e.get("checksum")
    if checksum is not None and (type(checksum) is not str or not CHECKSUM.match(checksum)):
        raise _fail(f"{field}.checksum", '"crc32:" and 8 hex digits', checksum)
    if version >= 2 and checksum is None:
        raise TraceError(f"{field}.checksum: missing")
    aliases = e.get("aliases")
    if aliases is not None:
        if len(want_dict(f"{field}.aliases", aliases)) > MAX_ALIASES:
            raise _fail(f"{field}.aliases", f"at most {MAX_ALIASES} names", f"{len(aliases)} names")
        for name, target in want_dict(f"{field}.aliases", aliases).items():
            if not (type(target) is str and len(name) <= 200 and len(target) <= 200):
                want_str(f"{field}.aliases", name, 200)
                want_str(f"{field}.aliases.{name}", target, 200)
    omitted = _opt(want_dict, f"{field}.omitted", e.get("omitted")) or {}
    for name, info in omitted.items():
        want_str(f"{field}.omitted", name, 200)
        want_dict(f"{field}.omitted.{name}", info)
        rows = want_list(f"{field}.omitted.{name}.rows", info.get("rows"), 2)
        if len(rows) != 2:
            raise _fail(f"{field}.omitted.{name}.rows", "[first, end)", rows)
        r0 = want_int(f"{field}.omitted.{name}.rows[0]", rows[0], 0, MAX_POSITIONS)
        want_int(f"{field}.omitted.{name}.rows[1]", rows[1], r0, pos[1] - start)
        _opt(want_str, f"{field}.omitted.{name}.reason", info.get("reason"), 200)
        _opt(want_str, f"{field}.omitted.{name}.recompute", info.get("recompute"), 200)
    return e


def validate_manifest(m: Any, field: str = "manifest") -> dict:
    """The manifest's own fields (schema 2: without steps; schema 1: steps validated by the caller)."""
    want_dict(field, m)
    if m.get("schema") != SCHEMA:
        raise TraceError(f"{field}: not a stepscope trace manifest")
    version = m.get("schema_version")
    if type(version) is not int or version < 1:
        raise _fail(f"{field}.schema_version", "a positive integer", version)
    if version not in READABLE_VERSIONS:
        raise TraceError(f"{field}: schema version {version} is newer than this stepscope reads")
    for key in ("model", "tokens", "prompt_len", "generation"):
        if key not in m:
            raise TraceError(f"{field}.{key}: missing")
    validate_model(m["model"], f"{field}.model")
    prompt_len = want_int(f"{field}.prompt_len", m["prompt_len"], 1, MAX_POSITIONS)
    tokens = want_list(f"{field}.tokens", m["tokens"], MAX_POSITIONS)
    if len(tokens) < prompt_len:
        raise _fail(f"{field}.tokens", f"at least prompt_len ({prompt_len}) tokens", f"{len(tokens)} tokens")
    for i, t in enumerate(tokens):
        validate_token(t, f"{field}.tokens[{i}]")
    gen = want_dict(f"{field}.generation", m["generation"])
    for key, v in gen.items():
        if key == "changes":  # live setting changes: [{"from_step": int, setting: scalar, ...}]
            for i, change in enumerate(want_list(f"{field}.generation.changes", v, 100_000)):
                _validate_settings(want_dict(f"{field}.generation.changes[{i}]", change), f"{field}.generation.changes[{i}]")
        else:
            _validate_settings({key: v}, f"{field}.generation")
    _opt(want_str, f"{field}.prompt", m.get("prompt"), MAX_PROMPT)
    _opt(want_bool, f"{field}.chat", m.get("chat"))
    _opt(want_bool, f"{field}.finished", m.get("finished"))
    _opt(want_str, f"{field}.stop_reason", m.get("stop_reason"), 64)
    _opt(want_str, f"{field}.device", m.get("device"), 200)
    _opt(want_str, f"{field}.created", m.get("created"), 64)
    _opt(want_str, f"{field}.attn_implementation", m.get("attn_implementation"), 1000)
    dtype = _opt(want_dict, f"{field}.dtype", m.get("dtype")) or {}
    _opt(want_str, f"{field}.dtype.model", dtype.get("model"), 32)
    if dtype.get("stored") not in (None, *STORED_DTYPES):  # the step files' float dtype
        raise _fail(f"{field}.dtype.stored", " or ".join(f'"{d}"' for d in STORED_DTYPES), dtype.get("stored"))
    for i, p in enumerate(_opt(want_list, f"{field}.record", m.get("record"), 1000) or []):
        want_str(f"{field}.record[{i}]", p, 1000)
    tok = _opt(want_dict, f"{field}.tokenizer", m.get("tokenizer")) or {}
    for key in ("name", "class", "file"):
        _opt(want_str, f"{field}.tokenizer.{key}", tok.get(key), 200)
    if tok.get("file") not in (None, TOKENIZER_FILE):
        raise _fail(f"{field}.tokenizer.file", f'"{TOKENIZER_FILE}"', tok.get("file"))
    versions = _opt(want_dict, f"{field}.versions", m.get("versions")) or {}
    for key, v in versions.items():
        _opt(want_str, f"{field}.versions.{key}", v, 100)
    return m
