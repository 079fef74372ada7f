"""Whether a trace is consistent as a whole (reading side, numpy only): every field may be valid on
its own (tracer/schema.py) and the whole still lie, e.g. a model fact that disagrees with the
arrays, a token id outside the vocabulary, a finished trace that lost steps. Each rule below
refuses with one TraceError line; docs/TRACE_FORMAT.md ("Consistency") lists them.

    check_trace(manifest)                      once per open: manifest and every step entry, vectorised
    rules = StepRules.of(manifest)             what a step file is checked against
    rules.check_header(table, entry, label)    a step's header, when the step is first used (lazy)
    rules.check_ids(name, array, label)        an integer array's values, when it is read
    check_lens(arrays, model, label)           lens.safetensors, when the lens is first used

A checksum catches damage; these rules catch a file that was edited and re-stamped, or written
by something else, before a view shows what cannot be.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

from .geometry import layer_window, sink_columns
from .lens import B_U, NORM_B, NORM_W, TRANSPOSED, W_O_NAME, W_U
from .names import BLOCK_NAMES, FINAL_NAMES, HEAD_NAMES, LAST_ROW_NAMES, SAMPLING_NAMES, NameFilter, shape_doc, split_block_name
from .trace_format import VALUE_DTYPES, TraceError

STORED_CODES = {"float32": "F32", "float16": "F16", "bfloat16": "BF16", "float64": "F64"}  # manifest dtype.stored -> the recorded arrays' code
PARAM_PARTS = ("embedding", "attention", "mlp", "norms", "lm_head", "other")
STOP_REASONS = ("eos", "max_new_tokens", "stopping_criteria", "interrupted", "error")
_BLOCK_VOCAB = frozenset(BLOCK_NAMES) | frozenset(LAST_ROW_NAMES)
_TOP_VOCAB = frozenset(HEAD_NAMES) | frozenset(FINAL_NAMES) | frozenset(SAMPLING_NAMES)
_INT_NAMES = ("ids",)  # names ending so hold integers; every other recorded name holds floats
_KV_NAMES = ("attn.hook_k", "attn.hook_v", "attn.hook_rot_k", "attn.hook_k_normed")
_QK_NAMES = ("attn.hook_q", "attn.hook_k", "attn.hook_rot_q", "attn.hook_rot_k", "attn.hook_q_normed", "attn.hook_k_normed")
_MLP_NAMES = ("mlp.hook_pre", "mlp.hook_pre_linear", "mlp.hook_post")
_MAPS = ("attn.hook_attn_scores", "attn.hook_pattern")


def vocabulary_size(n_layers: int) -> int:
    """How many names a step of an n_layers model can hold at most (recorded and aliases)."""
    return len(_TOP_VOCAB) + n_layers * len(_BLOCK_VOCAB)


def known_name(name: str, n_layers: int) -> bool:
    """A name of the recorded-name vocabulary (tracer/names.py) for a model of n_layers."""
    if name in _TOP_VOCAB:
        return True
    block = split_block_name(name)
    return block is not None and block[0] < n_layers and block[1] in _BLOCK_VOCAB and name == f"blocks.{block[0]}.{block[1]}"


def _first(mask: np.ndarray) -> int:
    return int(np.argmax(mask))


def _ints(values: list) -> np.ndarray:
    """Integers, -1 where absent (the schema already checked each is a non-negative int or missing)."""
    if None in values:
        values = [-1 if v is None else v for v in values]
    return np.array(values, dtype=np.int64)


def _token_ints(tokens, key: str) -> np.ndarray:
    """Every token's integer `key`, -1 where absent: from the reader's columns when it holds them."""
    column = getattr(tokens, "column", None)
    if column is not None:
        return column(key)
    return _ints([t.get(key) for t in tokens])


def _sampling_ints(steps, key: str) -> np.ndarray:
    """Every step's integer sampling `key`, -1 where absent: from the reader's columns when it holds them."""
    column = getattr(steps, "column", None)
    if column is not None:
        return column("sampling", key)
    return _ints([e["sampling"].get(key) for e in steps])


# -- the manifest and the step entries, at every open ------------------------------------------------
def _check_model(model: dict) -> None:
    f = "manifest.model"
    if model["n_heads"] % model["n_kv_heads"]:
        raise TraceError(f"{f}.n_kv_heads: {model['n_kv_heads']} does not divide n_heads ({model['n_heads']})")
    params = model.get("params") or {}
    if params.get("total") is not None and all(type(params.get(k)) is int for k in PARAM_PARTS):
        parts = sum(params[k] for k in PARAM_PARTS)
        if params["total"] != parts:
            raise TraceError(f"{f}.params.total: {params['total']} is not the sum of its parts ({parts})")
    lens = model.get("lens") or {}
    if lens.get("k") is not None and lens["k"] > model["vocab_size"]:
        raise TraceError(f"{f}.lens.k: {lens['k']} is more than the vocabulary ({model['vocab_size']} ids)")


def _check_tokenizer(tok: dict, vocab: int) -> None:
    f = "manifest.tokenizer"
    size = tok.get("vocab_size")
    if size is not None and (type(size) is not int or not 1 <= size <= 1 << 24):
        raise TraceError(f"{f}.vocab_size: expected an integer in [1, {1 << 24}]")
    limit = max(vocab, size or 0)  # special ids may lie past the model's rows only if the tokenizer has them
    bos = tok.get("bos_token_id")
    if bos is not None and (type(bos) is not int or not 0 <= bos < limit):
        raise TraceError(f"{f}.bos_token_id: expected a token id below {limit}, got {str(bos)[:40]}")
    for key in ("eos_token_ids", "special_ids"):
        ids = tok.get(key)
        if ids is None:
            continue
        if type(ids) is not list or len(ids) > 100_000 or any(type(i) is not int or not 0 <= i < limit for i in ids):
            raise TraceError(f"{f}.{key}: expected a list of token ids below {limit}")


def _max_new_tokens(manifest: dict) -> int | None:
    """The token limit the run stopped at: the last setting, clamped to the context as the session clamps it."""
    limit = manifest["generation"].get("max_new_tokens")
    if type(limit) is not int or limit < 1:
        return None
    n_ctx = manifest["model"].get("n_ctx")
    return min(limit, n_ctx - manifest["prompt_len"]) if n_ctx else limit


def _check_stop(manifest: dict, steps: list, tokens: list) -> None:
    finished, reason = manifest.get("finished"), manifest.get("stop_reason")
    if reason is not None and reason not in STOP_REASONS:
        raise TraceError(f"manifest.stop_reason: expected one of {', '.join(STOP_REASONS)}, got {reason[:40]!r}")
    if finished and reason in ("interrupted", "error"):
        raise TraceError(f"manifest.stop_reason: a finished trace cannot have stopped on {reason!r}")
    if not finished:
        return
    if not steps:
        raise TraceError("manifest.finished: a finished trace has no steps")
    n = len(steps)
    if reason == "max_new_tokens":
        limit = _max_new_tokens(manifest)
        if limit is not None and n < limit:
            raise TraceError(f"truncated: {n} of {limit} steps (the trace finished at max_new_tokens; steps.jsonl lost lines)")
    if reason == "eos":
        eos = (manifest.get("tokenizer") or {}).get("eos_token_ids")
        last = tokens[-1]["id"]
        if type(eos) is list and last not in eos:
            raise TraceError(f"manifest.stop_reason: 'eos', but the last token ({last}) is not an end-of-sequence token")


def check_trace(manifest: dict) -> None:
    """The whole trace against itself, once per open (manifest and entries validated, in order).
    Vectorised over the entries: a 200,000-step trace costs a few list comprehensions."""
    model = manifest["model"]
    vocab = model["vocab_size"]
    _check_model(model)
    _check_tokenizer(manifest.get("tokenizer") or {}, vocab)
    stored = (manifest.get("dtype") or {}).get("stored")
    if stored is not None and stored not in STORED_CODES:
        raise TraceError(f"manifest.dtype.stored: expected one of {', '.join(STORED_CODES)}, got {stored[:40]!r}")
    tokens, steps = manifest["tokens"], manifest["steps"]
    n = len(tokens)
    ids = _token_ints(tokens, "id")
    if n and int(ids.max()) >= vocab:
        i = _first(ids >= vocab)
        raise TraceError(f"manifest.tokens[{i}].id: {ids[i]} is outside the vocabulary ({vocab} ids)")
    where = _token_ints(tokens, "position")
    bad = (where >= 0) & (where != np.arange(n))
    if bad.any():
        i = _first(bad)
        raise TraceError(f"manifest.tokens[{i}].position: expected {i}, got {where[i]}")
    if steps:
        m = len(steps)
        chosen = _sampling_ints(steps, "chosen_id")
        taken = ids[-m:]
        bad = (chosen >= 0) & (chosen != taken)
        if bad.any():
            i = _first(bad)
            raise TraceError(f"steps[{i}].sampling.chosen_id: {chosen[i]}, but the step's token is {taken[i]}")
        for key in ("top1_id",):
            got = _sampling_ints(steps, key)
            if int(got.max()) >= vocab:
                i = _first(got >= vocab)
                raise TraceError(f"steps[{i}].sampling.{key}: {got[i]} is outside the vocabulary ({vocab} ids)")
        for key in ("nucleus_size",):
            got = _sampling_ints(steps, key)
            if int(got.max()) > vocab:
                i = _first(got > vocab)
                raise TraceError(f"steps[{i}].sampling.{key}: {got[i]} is more than the vocabulary ({vocab} ids)")
        n_ctx = model.get("n_ctx")
        end = steps[-1]["positions"][1]
        if n_ctx is not None and end > n_ctx:
            raise TraceError(f"steps[{m - 1}].positions: ends at {end}, past the model's context (n_ctx {n_ctx})")
    _check_stop(manifest, steps, tokens)


# -- a step file, when the step is first used ---------------------------------------------------------
@dataclass(frozen=True)
class StepRules:
    """What a step file of one trace must agree with: the model facts, the stored dtype, the record patterns."""

    facts: dict
    stored: str | None = None  # safetensors code of the recorded float arrays
    keep: NameFilter | None = None  # the record patterns; None when they keep everything

    @classmethod
    def of(cls, manifest: dict) -> StepRules:
        code = (manifest.get("dtype") or {}).get("stored")
        stored = STORED_CODES.get(code) if code is not None else None
        patterns = manifest.get("record") or []
        keep = NameFilter(patterns) if patterns and "*" not in patterns else None
        return cls(manifest.get("model") or {}, stored, keep)

    def _recorded(self, name: str) -> bool:
        """Whether the record patterns let the recorder write `name`."""
        if self.keep is None or self.keep(name):
            return True
        if name.endswith("attn.hook_o_input"):  # stored for the reader to compute hook_result
            return self.keep(name[: -len("hook_o_input")] + "hook_result")
        return False

    def check_header(self, table: dict, entry: dict, label: str, aliases: dict | None = None) -> None:
        """Each stored array and alias is a name of the vocabulary for the layer count, allowed by the
        record patterns, of the expected dtype and of a shape that agrees with the model facts, the
        step's positions and the key positions it attended."""
        facts = self.facts
        n_layers = facts["n_layers"]
        aliases = aliases or {}
        if len(table) + len(aliases) > vocabulary_size(n_layers):
            raise TraceError(f"{label}: {len(table) + len(aliases)} names, more than a {n_layers}-layer model records")
        for alias, target in aliases.items():
            if not known_name(alias, n_layers):
                raise TraceError(f"{label}: alias {alias[:60]!r} is not a recorded name of a {n_layers}-layer model")
            if target not in table or target == alias:
                raise TraceError(f"{label}: alias {alias[:60]!r} names no stored array")
            if shape_doc(alias) != shape_doc(target):
                raise TraceError(f"{label}: alias {alias[:60]!r} names {target[:60]!r}, an array of another kind")
        start, end = entry["positions"]
        rows = end - start
        omitted = entry.get("omitted") or {}
        want = {"d_model": facts["d_model"], "n_heads": facts["n_heads"], "n_layers": n_layers, "vocab": facts["vocab_size"]}
        lens = facts.get("lens") or {}
        for name, info in table.items():
            if not known_name(name, n_layers):
                block = split_block_name(name)
                if block is not None and block[0] >= n_layers:
                    raise TraceError(f"{label}: {name[:60]!r} names layer {block[0]} of a {n_layers}-layer model")
                raise TraceError(f"{label}: {name[:60]!r} is not a recorded name")
            if not self._recorded(name) and not name.startswith(("sample.", "logit_lens.")):
                raise TraceError(f"{label}: {name[:60]!r} is recorded, but the manifest's record patterns exclude it")
            code = info["dtype"]
            kind = VALUE_DTYPES[code].kind
            if kind not in ("i", "u", "b") if name.endswith(_INT_NAMES) else kind != "f":
                raise TraceError(f"{label}: {name[:60]!r} has dtype {code}, unexpected for it")
            if self.stored and kind == "f" and not name.startswith(("sample.", "logit_lens.")) and code != self.stored:
                raise TraceError(f"{label}: {name[:60]!r} is stored as {code}, the manifest says {STORED_CODES_BY_CODE[self.stored]}")
            self._check_shape(name, info["shape"], rows - _omitted_rows(omitted, name), rows, start, end, want, lens, label)

    def _check_shape(self, name, shape, stored_rows, rows, start, end, want, lens, label) -> None:
        doc = shape_doc(name)
        axes = [a.strip() for a in doc.strip("[]").split(",")]
        if len(shape) != len(axes):
            raise TraceError(f"{label}: {name[:60]!r} has shape {shape}, expected {doc}")
        facts = self.facts
        need = dict(want, T=stored_rows)
        block = split_block_name(name)
        local = block[1] if block else name
        if local in _KV_NAMES:
            need["n_kv_heads"] = facts["n_kv_heads"]
        if local in _QK_NAMES:
            need["d_head"] = facts["d_head"]
        if local in _MLP_NAMES and not facts.get("n_experts"):
            need["d_mlp"] = facts["d_mlp"]
        if name == "logit_lens.ids" or name == "logit_lens.probs":
            need["k"] = min(int(lens.get("k") or shape[-1]), facts["vocab_size"])
        for axis, size in zip(axes, shape):
            if axis in need and size != need[axis]:
                raise TraceError(f"{label}: {name[:60]!r} has shape {shape}, expected {doc} with {axis}={need[axis]}")
        if block is not None and local in _MAPS:  # the key axis (maps are block names): the positions this step attended
            keys = shape[-1] - sink_columns(facts)
            window = layer_window(facts, block[0])
            attended = rows + min(start, window - 1) if window else end  # a sliding layer's cache keeps window - 1 positions
            if keys != attended:
                raise TraceError(f"{label}: {name[:60]!r} has {shape[-1]} key columns, expected S={attended + sink_columns(facts)} "
                                 f"for positions [{start}, {end})" + (f" and a window of {window}" if window else ""))

    def check_ids(self, name: str, arr: np.ndarray, label: str) -> None:
        """Token ids of an integer array read from a step file lie in the vocabulary."""
        if name.endswith("expert_ids"):
            limit = self.facts.get("n_experts") or 1 << 20
        elif name.startswith(("sample.", "logit_lens.")):
            limit = self.facts["vocab_size"]
        else:
            return
        if arr.size and (int(arr.min()) < 0 or int(arr.max()) >= limit):
            bad = int(arr.min()) if int(arr.min()) < 0 else int(arr.max())
            raise TraceError(f"{label}: {name[:60]!r} holds {bad}, outside [0, {limit})")


STORED_CODES_BY_CODE = {code: name for name, code in STORED_CODES.items()}


def _omitted_rows(omitted: dict, name: str) -> int:
    if name not in omitted:
        return 0
    r0, r1 = omitted[name]["rows"]
    return r1 - r0


# -- lens.safetensors, when the lens is first used -----------------------------------------------------
POST_NORM = re.compile(r"blocks\.(\d{1,6})\.ln[12]_post\.[wb]\Z")  # post-norm weights (direct logit attribution)


def check_lens(arrays: dict[str, np.ndarray], model: dict, label: str) -> None:
    """The logit lens' arrays: the final norm's weight (and bias) [d_model], W_U [d_model, vocab]
    (or W_U_T [vocab, d_model]), b_U [vocab], each layer's W_O [n_heads, d_head, d_model] (or
    W_O_T [d_model, n_heads, d_head]), each layer's post-norm weight and bias [d_model]; float,
    finite, nothing else."""
    d, vocab, n_layers = model["d_model"], model["vocab_size"], model["n_layers"]
    expected = {NORM_W: (d,), NORM_B: (d,), W_U: (d, vocab), W_U + TRANSPOSED: (vocab, d), B_U: (vocab,)}
    if NORM_W not in arrays or (W_U not in arrays and W_U + TRANSPOSED not in arrays):
        raise TraceError(f"{label}: lacks {NORM_W} or {W_U}")
    if len(arrays) > 8 + 5 * n_layers:
        raise TraceError(f"{label}: {len(arrays)} arrays, more than a lens of a {n_layers}-layer model holds")
    want: tuple
    for name, a in arrays.items():
        base = name[: -len(TRANSPOSED)] if name.endswith(TRANSPOSED) else name
        m = W_O_NAME.match(base)
        if m:
            if int(m.group(1)) >= n_layers:
                raise TraceError(f"{label}: {name[:60]!r} names layer {m.group(1)} of a {n_layers}-layer model")
            w_o = (model["n_heads"], a.shape[1] if name == base and a.ndim == 3 else (a.shape[2] if a.ndim == 3 else 0), d)
            want = w_o if name == base else (d, w_o[0], w_o[1])
        elif name in expected:
            want = expected[name]
        elif (post := POST_NORM.match(name)) and int(post.group(1)) < n_layers:
            want = (d,)
        else:
            raise TraceError(f"{label}: {name[:60]!r} is not a lens array")
        if a.dtype.kind != "f":
            raise TraceError(f"{label}: {name[:60]!r} has dtype {a.dtype}, expected floats")
        if tuple(a.shape) != want or 0 in want:
            raise TraceError(f"{label}: {name[:60]!r} has shape {list(a.shape)}, expected {list(want)}")
        if not _finite(a):
            raise TraceError(f"{label}: {name[:60]!r} holds NaN or inf")


def _finite(a: np.ndarray, chunk: int = 1 << 24) -> bool:
    """All finite, in bounded chunks (no full-size temporary for a large W_U)."""
    flat = a.reshape(-1)
    for i in range(0, flat.size, chunk):
        if not np.isfinite(flat[i : i + chunk]).all():
            return False
    return True

