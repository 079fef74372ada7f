"""Evaluate a parsed watch expression at one step of a trace (numpy only, no torch, no `eval`).

Variables read the step's manifest entry only (no array file is opened):
    p        final sampling probability of the chosen token (the Candidates `p` column)
    top1     raw probability of the most likely token
    entropy  entropy (nats) of the sampling distribution;  raw_entropy: of the model's distribution
    rank     1-based rank of the chosen token by logit;    id: the chosen token id;  step: the index
Recorded tensors by name (`logits`, `blocks.10.hook_resid_post`) are numpy arrays; index them
with `[i, j]`, `[-1]`, `[a:b]`. Functions: see `FUNCTIONS`.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from stepscope.tui.views.logit_lens import trace_lens
from stepscope.tui.watch.parse import Binary, Call, Compare, ExprError, Index, Name, Num, Slice, Str, Unary, unparse
from stepscope.tui.watch.tokens import token_ids


class EvalError(ValueError):
    """An expression that cannot be computed at one step (e.g. a tensor this step did not record)."""


@dataclass(frozen=True)
class Func:
    """A function of the expression language: `arity` (min, max) and what it returns."""

    arity: tuple[int, int]
    doc: str | None
    impl: Callable
    token_args: tuple[int, ...] = ()  # argument positions that are tokens (text in quotes, or an id)


VARIABLES = {
    "p": "final sampling probability of the chosen token",
    "top1": "raw probability of the most likely token",
    "entropy": "entropy (nats) of the sampling distribution",
    "raw_entropy": "entropy (nats) of the model's distribution",
    "rank": "rank of the chosen token by logit (1 = top)",
    "id": "id of the chosen token",
    "step": "the step index (0 = prefill)",
}


def _sampling(ctx, key: str) -> float:
    value = (ctx.entry.get("sampling") or {}).get(key)
    if not isinstance(value, (int, float)):
        raise EvalError(f"step {ctx.index} has no {key} in its sampler record")
    return float(value)


def _variable(ctx, name: str) -> float:
    if name == "p":
        return _sampling(ctx, "chosen_prob")
    if name == "top1":
        return _sampling(ctx, "top1_prob")
    if name in ("entropy", "raw_entropy"):
        return _sampling(ctx, name)
    if name == "rank":
        return _sampling(ctx, "chosen_rank") + 1.0
    if name == "id":
        return float((ctx.entry.get("token") or {}).get("id", math.nan))
    if name == "step":
        return float(ctx.index)
    raise EvalError(f"unknown variable {name}")  # pragma: no cover - compile() rejects it


class Context:
    """One step of a trace; `step` is a `tracer.Step` (arrays readable) or a manifest entry dict."""

    def __init__(self, trace, step, tokens: Callable[[str], int] | None = None):
        self.trace = trace
        self.step = step
        self.entry = step if isinstance(step, dict) else step.entry
        self.index = int(self.entry.get("index", 0))
        self._tokens = tokens
        self._memo: dict = {}

    def token(self, text: str) -> int:
        resolve = self._tokens or token_ids(self.trace)
        return resolve(text)

    def array(self, name: str) -> np.ndarray:
        if isinstance(self.step, dict):
            raise EvalError(f"{name} needs the step's arrays")
        if name not in self.step:
            raise EvalError(f"step {self.index} did not record {name}")
        return self.step[name]

    def memo(self, key, compute):
        if key not in self._memo:
            self._memo[key] = compute()
        return self._memo[key]

    # -- the step's distributions at the predicting (last) position -----------------------------
    def logits(self) -> np.ndarray | None:
        """Raw logits [vocab] at the last position (float64), or None when not recorded."""
        if isinstance(self.step, dict) or "logits" not in self.step:
            return None
        return self.memo("logits", lambda: np.asarray(self.step["logits"][-1], dtype=np.float64))

    def candidates(self) -> dict[int, int]:
        """Candidate id -> row in the stored `sample.candidate_*` arrays."""
        def build():
            ids = self.array("sample.candidate_ids")  # [N]
            return {int(t): i for i, t in enumerate(ids)}
        return self.memo("candidates", build)


def _softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - x.max())
    return e / e.sum()


def _token_arg(ctx, value) -> int:
    if isinstance(value, str):
        return ctx.token(value)
    v = _scalar(value, "a token id")
    if v != int(v) or v < 0:
        raise EvalError(f"{v:g} is not a token id")
    return int(v)


def _check_id(ctx, token_id: int, vocab: int) -> None:
    if token_id >= vocab:
        raise EvalError(f"token id {token_id} is outside the vocabulary ({vocab})")


def f_p(ctx, token=None) -> float:
    """final sampling probability of a token (no argument: of the chosen token)"""
    if token is None:
        return _variable(ctx, "p")
    tid = _token_arg(ctx, token)
    rows = ctx.candidates()
    if tid in rows:
        return float(ctx.array("sample.candidate_probs")[rows[tid]])
    stages = (ctx.entry.get("sampling") or {}).get("stages") or []
    vocab = int(ctx.trace.model.get("vocab_size") or 0)
    if stages and vocab and int(stages[-1].get("kept", vocab)) < vocab:
        return 0.0  # the filters removed it (every kept candidate is stored)
    logits = ctx.logits()
    if logits is None:
        raise EvalError(f"token {tid} is not among the stored candidates and logits were not recorded")
    _check_id(ctx, tid, logits.shape[0])
    temperature = float((ctx.entry.get("sampling") or {}).get("temperature") or 1.0)
    return float(_softmax(logits / temperature)[tid])


def f_raw(ctx, token) -> float:
    """the model's probability of a token (softmax of the raw logits)"""
    tid = _token_arg(ctx, token)
    logits = ctx.logits()
    if logits is not None:
        _check_id(ctx, tid, logits.shape[0])
        return float(ctx.memo("raw_probs", lambda: _softmax(logits))[tid])
    rows = ctx.candidates()
    if tid in rows:
        return float(ctx.array("sample.candidate_raw_probs")[rows[tid]])
    raise EvalError(f"token {tid} is not among the stored candidates and logits were not recorded")


def f_logit(ctx, token) -> float:
    """the raw logit of a token at the predicting position"""
    tid = _token_arg(ctx, token)
    logits = ctx.logits()
    if logits is not None:
        _check_id(ctx, tid, logits.shape[0])
        return float(logits[tid])
    rows = ctx.candidates()
    if tid in rows:
        return float(ctx.array("sample.candidate_logits")[rows[tid]])
    raise EvalError(f"token {tid} is not among the stored candidates and logits were not recorded")


def f_rank(ctx, token=None) -> float:
    """rank of a token by logit, 1 = top (no argument: of the chosen token)"""
    if token is None:
        return _variable(ctx, "rank")
    tid = _token_arg(ctx, token)
    logits = ctx.logits()
    if logits is not None:
        _check_id(ctx, tid, logits.shape[0])
        return float(1 + int((logits > logits[tid]).sum()))
    rows = ctx.candidates()  # stored in logit order
    if tid in rows:
        cand = ctx.array("sample.candidate_logits")
        return float(1 + int((cand > cand[rows[tid]]).sum()))
    raise EvalError(f"token {tid} is not among the stored candidates and logits were not recorded")


def _layer(ctx, value) -> int:
    n = int(ctx.trace.model.get("n_layers") or 0)
    layer = int(_scalar(value, "a layer"))
    if layer < 0:
        layer += n
    if not 0 <= layer < n:
        raise EvalError(f"layer {layer} is outside 0..{n - 1}")
    return layer


def _exact_lens(ctx):
    """The trace's logit lens (final norm + W_U) when the step holds its residual rows, else None."""
    lens = trace_lens(ctx.trace)
    if lens is None or isinstance(ctx.step, dict) or not lens.has_rows(ctx.step):
        return None
    return lens


def _lens_logits(ctx, lens, layer: int) -> np.ndarray:
    """[vocab] float64 lens logits of a layer at the step's last position (memoised per step)."""
    rows = ctx.memo("lens_rows", lambda: lens.rows(ctx.step))
    return ctx.memo(("lens", layer), lambda: lens.logits(rows[layer : layer + 1])[0].astype(np.float64))


def f_lens(ctx, layer, token=None) -> float:
    """logit-lens probability of a token at a layer (no token: of its top token); exact over the whole
    vocabulary when the trace stores its lens (final norm + W_U), else NaN outside the recorded top-k"""
    L = _layer(ctx, layer)
    if token is not None:
        lens = _exact_lens(ctx)
        if lens is not None:
            tid = _token_arg(ctx, token)
            logits = _lens_logits(ctx, lens, L)
            _check_id(ctx, tid, logits.shape[0])
            return float(ctx.memo(("lens_p", L), lambda: _softmax(logits))[tid])
    ids, probs = ctx.array("logit_lens.ids"), ctx.array("logit_lens.probs")  # [n_layers, k]
    if token is None:
        return float(probs[L, 0])
    tid = _token_arg(ctx, token)
    hits = np.flatnonzero(ids[L] == tid)
    if not hits.size:
        raise EvalError(f"token {tid} is not in layer {L}'s recorded lens top {ids.shape[1]} (no W_U stored)")
    return float(probs[L, hits[0]])


def f_lensrank(ctx, layer, token=None) -> float:
    """logit-lens rank of a token at a layer, 1 = top (no token: of the chosen token); exact over the
    whole vocabulary when the trace stores its lens, else within the recorded top-k"""
    L = _layer(ctx, layer)
    tid = int(_variable(ctx, "id")) if token is None else _token_arg(ctx, token)
    lens = _exact_lens(ctx)
    if lens is not None:
        logits = _lens_logits(ctx, lens, L)
        _check_id(ctx, tid, logits.shape[0])
        return float(1 + int((logits > logits[tid]).sum()))
    ids = ctx.array("logit_lens.ids")  # [n_layers, k]
    hits = np.flatnonzero(ids[L] == tid)
    if not hits.size:
        raise EvalError(f"token {tid} is not in layer {L}'s recorded lens top {ids.shape[1]} (no W_U stored)")
    return float(hits[0] + 1)


def _head_map(ctx, kind: str, layer, head) -> np.ndarray:
    L = _layer(ctx, layer)
    arr = ctx.array(f"blocks.{L}.attn.hook_{kind}")  # [n_heads, T, S]
    h = int(_scalar(head, "a head"))
    if not -arr.shape[0] <= h < arr.shape[0]:
        raise EvalError(f"head {h} is outside 0..{arr.shape[0] - 1}")
    return arr[h]  # [T, S]


def f_pattern(ctx, layer, head) -> np.ndarray:
    """the attention pattern [query, key] of layer L, head H"""
    return _head_map(ctx, "pattern", layer, head)


def f_scores(ctx, layer, head) -> np.ndarray:
    """the attention scores [query, key] of layer L, head H"""
    return _head_map(ctx, "attn_scores", layer, head)


def _reduce(fn):
    def impl(ctx, x):
        a = _array(x)
        if a.size == 0:
            raise EvalError("reduction of an empty array")
        return float(fn(a))
    return impl


def _elementwise(fn):
    def impl(ctx, x):
        with np.errstate(all="ignore"):
            return fn(_array(x)) if isinstance(x, np.ndarray) else float(fn(_scalar(x, "a number")))
    return impl


def f_cos(ctx, a, b) -> float:
    """cosine similarity of two arrays of the same size"""
    x, y = _array(a).ravel(), _array(b).ravel()
    if x.shape != y.shape:
        raise EvalError(f"cos of arrays of sizes {x.size} and {y.size}")
    denom = float(np.linalg.norm(x) * np.linalg.norm(y))
    return float(x @ y) / denom if denom else math.nan


FUNCTIONS: dict[str, Func] = {
    "p": Func((0, 1), f_p.__doc__, f_p, (0,)),
    "raw": Func((1, 1), f_raw.__doc__, f_raw, (0,)),
    "logit": Func((1, 1), f_logit.__doc__, f_logit, (0,)),
    "rank": Func((0, 1), f_rank.__doc__, f_rank, (0,)),
    "lens": Func((1, 2), f_lens.__doc__, f_lens, (1,)),
    "lensrank": Func((1, 2), f_lensrank.__doc__, f_lensrank, (1,)),
    "pattern": Func((2, 2), f_pattern.__doc__, f_pattern),
    "scores": Func((2, 2), f_scores.__doc__, f_scores),
    "norm": Func((1, 1), "L2 norm of an array", _reduce(lambda a: np.linalg.norm(a.ravel()))),
    "mean": Func((1, 1), "mean of an array", _reduce(np.mean)),
    "sum": Func((1, 1), "sum of an array", _reduce(np.sum)),
    "max": Func((1, 1), "maximum of an array", _reduce(np.max)),
    "min": Func((1, 1), "minimum of an array", _reduce(np.min)),
    "std": Func((1, 1), "standard deviation of an array", _reduce(np.std)),
    "argmax": Func((1, 1), "flat index of the maximum", _reduce(np.argmax)),
    "abs": Func((1, 1), "absolute value (element-wise)", _elementwise(np.abs)),
    "log": Func((1, 1), "natural logarithm (element-wise)", _elementwise(np.log)),
    "exp": Func((1, 1), "exponential (element-wise)", _elementwise(np.exp)),
    "cos": Func((2, 2), f_cos.__doc__, f_cos),
}


def _array(value) -> np.ndarray:
    if isinstance(value, str):
        raise EvalError("a token text is not a number")
    return np.asarray(value, dtype=np.float64)


def _scalar(value, what: str) -> float:
    if isinstance(value, str):
        raise EvalError(f"expected {what}, got the text {value!r}")
    if isinstance(value, np.ndarray):
        if value.size != 1:
            raise EvalError(f"expected {what}, got an array of shape {list(value.shape)}")
        return float(value.reshape(()))
    return float(value)


def _index(value, item, ctx, axis: int, shape) -> int | slice:
    if isinstance(item, Slice):
        start = None if item.start is None else int(_scalar(evaluate(item.start, ctx), "an index"))
        stop = None if item.stop is None else int(_scalar(evaluate(item.stop, ctx), "an index"))
        return slice(start, stop)
    v = _scalar(evaluate(item, ctx), "an index")
    if v != int(v):
        raise EvalError(f"index {v:g} is not a whole number")
    i = int(v)
    if not -shape[axis] <= i < shape[axis]:
        raise EvalError(f"index {i} is outside axis {axis} of size {shape[axis]}")
    return i


def evaluate(node, ctx: Context):
    """The value of `node` at `ctx`: a float, a numpy array, or a str (a token text argument)."""
    if isinstance(node, Num):
        return node.value
    if isinstance(node, Str):
        return node.value
    if isinstance(node, Name):
        if node.name in VARIABLES:
            return _variable(ctx, node.name)
        return ctx.array(node.name)
    if isinstance(node, Call):
        func = FUNCTIONS[node.func]
        return func.impl(ctx, *(evaluate(a, ctx) for a in node.args))
    if isinstance(node, Index):
        target = evaluate(node.target, ctx)
        if not isinstance(target, np.ndarray):
            raise EvalError("only arrays can be indexed")
        if len(node.items) > target.ndim:
            raise EvalError(f"{len(node.items)} indices for an array of shape {list(target.shape)}")
        key = tuple(_index(target, item, ctx, axis, target.shape) for axis, item in enumerate(node.items))
        return target[key]
    if isinstance(node, Unary):
        value = evaluate(node.operand, ctx)
        return -_array(value) if isinstance(value, np.ndarray) else -_scalar(value, "a number")
    if isinstance(node, Binary):
        left, right = evaluate(node.left, ctx), evaluate(node.right, ctx)
        a = _array(left) if isinstance(left, np.ndarray) else _scalar(left, "a number")
        b = _array(right) if isinstance(right, np.ndarray) else _scalar(right, "a number")
        try:
            with np.errstate(all="ignore"):
                if node.op == "+":
                    out = np.add(a, b)
                elif node.op == "-":
                    out = np.subtract(a, b)
                elif node.op == "*":
                    out = np.multiply(a, b)
                else:
                    out = np.divide(a, b)
        except ValueError as exc:  # shapes that do not broadcast
            raise EvalError(f"shapes do not match for {node.op}: {exc}") from None
        return out if isinstance(out, np.ndarray) and out.ndim else float(out)
    if isinstance(node, Compare):
        return compare(node.op, _scalar(evaluate(node.left, ctx), "a number"),
                       _scalar(evaluate(node.right, ctx), "a number"))
    raise EvalError(f"cannot evaluate {type(node).__name__}")  # pragma: no cover


def compare(op: str, a: float, b: float) -> bool:
    """`a op b`; a NaN side makes every comparison but != false."""
    if op == "<":
        return a < b
    if op == "<=":
        return a <= b
    if op == ">":
        return a > b
    if op == ">=":
        return a >= b
    if op == "==":
        return a == b
    return a != b


def scalar_value(node, ctx: Context) -> float:
    """The value of `node` at `ctx` as one number (EvalError when it is an array or a text)."""
    value = evaluate(node, ctx)
    if isinstance(value, str):
        raise EvalError("a token text is not a value: use p(...), rank(...) or lens(L, ...)")
    if isinstance(value, np.ndarray) and value.size != 1:
        raise EvalError(f"the value is an array of shape {list(value.shape)}: index it or use norm/mean/max")
    return _scalar(value, "a number")


def _walk(node):
    yield node
    if isinstance(node, Call):
        for a in node.args:
            yield from _walk(a)
    elif isinstance(node, Index):
        yield from _walk(node.target)
        for item in node.items:
            if isinstance(item, Slice):
                for part in (item.start, item.stop):
                    if part is not None:
                        yield from _walk(part)
            else:
                yield from _walk(item)
    elif isinstance(node, Unary):
        yield from _walk(node.operand)
    elif isinstance(node, (Binary, Compare)):
        yield from _walk(node.left)
        yield from _walk(node.right)


def needs_arrays(node) -> bool:
    """Whether evaluating `node` opens step files (False: the manifest entry is enough)."""
    for n in _walk(node):
        if isinstance(n, Name) and n.name not in VARIABLES:
            return True
        if isinstance(n, Call) and (n.args or n.func not in ("p", "rank")):
            return True
    return False


def check(node, trace) -> None:
    """Reject unknown functions and names, wrong argument counts and unknown token texts (ExprError)."""
    known = None
    token_args = {id(a) for n in _walk(node) if isinstance(n, Call) and n.func in FUNCTIONS
                  for i, a in enumerate(n.args) if i in FUNCTIONS[n.func].token_args}
    for n in _walk(node):
        if isinstance(n, Str) and id(n) not in token_args:
            raise ExprError(f"the text {n.value!r} can only be a token argument, e.g. p({unparse(n)})")
        if isinstance(n, Call):
            func = FUNCTIONS.get(n.func)
            if func is None:
                raise ExprError(f"unknown function {n.func}(); functions: {', '.join(FUNCTIONS)}")
            lo, hi = func.arity
            if not lo <= len(n.args) <= hi:
                want = f"{lo}" if lo == hi else f"{lo} to {hi}"
                raise ExprError(f"{n.func}() takes {want} argument{'s' if hi != 1 else ''}, got {len(n.args)}")
            for i, arg in enumerate(n.args):
                if isinstance(arg, Str) and i not in func.token_args:
                    raise ExprError(f"argument {i + 1} of {n.func}() is a number, not a text")
                if isinstance(arg, Str) and trace is not None:
                    token_ids(trace)(arg.value)  # raises ExprError when it is not one token
        elif isinstance(n, Name) and n.name not in VARIABLES:
            if trace is None or not len(trace.steps):
                continue
            if known is None:
                known = set(trace.steps[0].names) | set(trace.steps[len(trace.steps) - 1].names)
            if n.name not in known:
                hint = f"; variables: {', '.join(VARIABLES)}" if "." not in n.name else ""
                raise ExprError(f"{n.name} is not recorded in this trace{hint}")
