"""Compare two traces of the same model (numpy, torch-free): tokens, residual divergence, any tensor.

Steps pair by index (step 0 the prefill, step i the i-th generated token). Two prompts of equal
token length compare position by position; unequal prompts align at the END of the prompt (the
prefill's last rows pair, and every later position is shifted by the length difference), and
the result says so. Per step, for every layer, the residual stream at the predicting (last)
position diverges by rel = |a − b| / |a| and cosine(a, b). Divergences are ranked only at steps
whose predicting position was fed the same token in both runs (`same_input`): where the fed
tokens differ, the residual differs from layer 0 on because the input does, which says nothing.

    d = compare(trace_a, trace_b)
    d.identical, d.first_token, d.first_step, d.steps[i].layers   # [(rel, cos)] per layer
    side = tensor_diff(trace_a, trace_b, step, "blocks.3.attn.hook_pattern")   # a, b, b − a
    print(summary(d))
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .inert import inert
from .names import forward_order, shape_doc
from .trace_format import TraceError

SAME_MODEL_FACTS = ("family", "n_layers", "d_model", "n_heads", "vocab_size")


@dataclass
class StepDiff:
    """One paired step: its tokens and the residual divergence per layer at the predicting position."""

    index: int
    token_a: dict
    token_b: dict
    layers: list[tuple[float, float]]  # per layer (relative norm of b − a, cosine) of resid_post's last row
    differs: list[str] = field(default_factory=list)  # names whose values differ (forward order)
    same_input: bool = True  # both runs fed the same token at the predicting (last) position

    @property
    def max_rel(self) -> float:
        return max((r for r, _ in self.layers), default=0.0)


@dataclass
class Difference:
    """Where two tensors first differ: step, name, index into the array and the token position of its row."""

    step: int
    name: str
    index: tuple[int, ...]
    position: int | None
    a: float
    b: float


@dataclass
class TraceDiff:
    aligned: str  # "position by position" | "at the end of the prompt (A: n tokens, B: m tokens)"
    shift: int  # position in B = position in A + shift
    first_token: int | None  # first token position (in A) whose token differs, None when all agree
    first_step: int | None  # first step whose chosen token differs
    steps: list[StepDiff]
    first_difference: Difference | None  # the first differing value in forward order, None when identical
    extra_steps: tuple[int, int]  # steps beyond the common ones in A and in B
    first_input_step: int | None = None  # first step fed a different token at its predicting position

    @property
    def comparable_steps(self) -> list[StepDiff]:
        """The steps whose predicting position was fed the same token in both runs."""
        return [s for s in self.steps if s.same_input]

    @property
    def identical(self) -> bool:
        return self.first_difference is None and self.first_token is None and self.extra_steps == (0, 0)

    def diverging_layers(self, n: int = 3) -> list[tuple[int, int, float, float]]:
        """(step, layer, rel, cos) of the n largest residual divergences, among the steps fed the
        same token at the predicting position (elsewhere the inputs differ, so the residuals do)."""
        if type(n) is not int or n < 0:
            raise ValueError(f"the number of layers to list must be 0 or more, got {n!r}")
        rows = [(s.index, i, r, c) for s in self.comparable_steps for i, (r, c) in enumerate(s.layers)]
        return sorted(rows, key=lambda row: -row[2])[:n]


def check_same_model(a, b) -> None:
    """TraceError (one line) unless both traces come from models of the same shape."""
    for fact in SAME_MODEL_FACTS:
        if a.model.get(fact) != b.model.get(fact):
            raise TraceError(f"not the same model: {fact} {a.model.get(fact)!r} vs {b.model.get(fact)!r}")


def _row_axis(name: str) -> int | None:
    """The axis of a recorded name that runs over the step's positions (T), None when it has none."""
    dims = [d.strip() for d in shape_doc(name).strip("[]").split(",") if d.strip()]
    return dims.index("T") if "T" in dims else None


def _align(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Crop every axis where the shapes differ to the trailing common length (alignment at the end)."""
    if x.shape == y.shape or x.ndim != y.ndim:
        return x, y
    cut = tuple(slice(x.shape[i] - n, None) for i, n in enumerate(min(p, q) for p, q in zip(x.shape, y.shape)))
    cut_y = tuple(slice(y.shape[i] - n, None) for i, n in enumerate(min(p, q) for p, q in zip(x.shape, y.shape)))
    return x[cut], y[cut_y]


def tensor_diff(a, b, step: int, name: str) -> dict:
    """{"a", "b", "diff" (b − a, float64), "cropped"} of one tensor of a step in both traces, the
    arrays aligned at the end where their shapes differ (unequal prompts)."""
    for t, label in ((a, "A"), (b, "B")):
        if not 0 <= step < len(t.steps):
            raise TraceError(f"trace {label} has no step {step}")
        if name not in t.steps[step]:
            raise TraceError(f"trace {label} step {step} has no {inert(name, 120)}")
    x, y = a.steps[step][name], b.steps[step][name]
    xa, ya = _align(x, y)
    if xa.shape != ya.shape:
        raise TraceError(f"{inert(name, 120)}: shapes {x.shape} and {y.shape} do not align")
    return {"a": xa, "b": ya, "diff": ya.astype(np.float64) - xa.astype(np.float64), "cropped": xa.shape != x.shape or ya.shape != y.shape}


def _divergence(x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """(|y − x| / |x|, cosine(x, y)) of two vectors, in float64."""
    x, y = x.astype(np.float64), y.astype(np.float64)
    nx, ny = float(np.linalg.norm(x)), float(np.linalg.norm(y))
    rel = float(np.linalg.norm(y - x)) / nx if nx else (0.0 if not ny else float("inf"))
    cos = float(x @ y) / (nx * ny) if nx and ny else (1.0 if nx == ny else 0.0)
    return rel, cos


def _first_index(x: np.ndarray, y: np.ndarray) -> tuple[int, ...] | None:
    """Index of the first differing element (NaN equals NaN), None when equal."""
    if x.shape != y.shape:
        return (0,) * x.ndim
    same = (x == y) | (np.isnan(x) & np.isnan(y)) if x.dtype.kind == "f" else x == y
    if same.all():
        return None
    return tuple(int(i) for i in np.unravel_index(int(np.argmin(same.reshape(-1))), x.shape))


def _fed_token(trace, step, shift: int = 0) -> int | None:
    """The token id fed at a step's predicting (last) position, `shift` added to the position."""
    pos = step.positions[1] - 1 + shift
    return int(trace.tokens[pos]["id"]) if 0 <= pos < len(trace.tokens) else None


def _step_diff(a, b, i: int, n_layers: int, shift: int = 0) -> tuple[StepDiff, Difference | None]:
    sa, sb = a.steps[i], b.steps[i]
    fed_a = _fed_token(a, sa)
    same_input = fed_a is not None and fed_a == _fed_token(b, sb) and sb.positions[1] - sa.positions[1] == shift
    layers = []
    for layer in range(n_layers):
        name = f"blocks.{layer}.hook_resid_post"
        if name in sa and name in sb:
            layers.append(_divergence(sa[name][-1], sb[name][-1]))
    differs, first = [], None
    for name in forward_order(set(sa.names) & set(sb.names)):
        x, y = _align(sa[name], sb[name])
        idx = _first_index(x, y)
        if idx is None:
            continue
        differs.append(name)
        if first is None:
            axis = _row_axis(name)
            start = sa.positions[0] + (sa[name].shape[axis] - x.shape[axis] if axis is not None else 0)
            pos = start + idx[axis] if axis is not None and x.shape == y.shape else None
            first = Difference(i, name, idx, pos, float(x[idx]) if x.shape == y.shape else float("nan"),
                               float(y[idx]) if x.shape == y.shape else float("nan"))
    for name in forward_order(set(sa.names) ^ set(sb.names)):  # recorded in one trace only
        differs.append(name)
        if first is None:
            first = Difference(i, name, (), None, float("nan"), float("nan"))
    return StepDiff(i, sa.token, sb.token, layers, differs, same_input), first


def compare(a, b) -> TraceDiff:
    """The full comparison of two traces of the same model (reads every common step's tensors)."""
    check_same_model(a, b)
    pa, pb = a.prompt_len, b.prompt_len
    shift = pb - pa
    aligned = "position by position" if shift == 0 else f"at the end of the prompt (A: {pa} tokens, B: {pb} tokens)"
    ids_a = [t["id"] for t in a.tokens]
    ids_b = [t["id"] for t in b.tokens]
    first_token = None
    for pos in range(max(0, -shift), len(ids_a)):  # A's positions that have a partner in B
        if pos + shift >= len(ids_b) or ids_a[pos] != ids_b[pos + shift]:
            first_token = pos
            break
    if first_token is None and len(ids_b) - shift > len(ids_a):
        first_token = len(ids_a)
    n = min(len(a.steps), len(b.steps))
    steps, first_diff = [], None
    for i in range(n):
        sd, first = _step_diff(a, b, i, int(a.model["n_layers"]), shift)
        steps.append(sd)
        first_diff = first_diff or first
    first_step = next((s.index for s in steps if s.token_a.get("id") != s.token_b.get("id")), None)
    first_input = next((s.index for s in steps if not s.same_input), None)
    return TraceDiff(aligned, shift, first_token, first_step, steps, first_diff, (len(a.steps) - n, len(b.steps) - n),
                     first_input)


def _tok(token: dict) -> str:
    return inert(repr(token.get("text", "")), 40)


def summary(d: TraceDiff, top: int = 3) -> str:
    """A compact text summary: alignment, first differences, the `top` (>= 0) most diverging layers."""
    if type(top) is not int or top < 0:
        raise ValueError(f"the number of layers to list must be 0 or more, got {top!r}")
    lines = [f"aligned {d.aligned}"]
    if d.identical:
        return "\n".join(lines + [f"identical: {len(d.steps)} steps, every token and tensor equal"])
    if d.first_token is not None:
        lines.append(f"first differing token: position {d.first_token} (of A)")
    if d.first_input_step is not None:
        fed = len(d.comparable_steps)
        lines.append(f"inputs differ: step {d.first_input_step} is the first fed a different token at its predicting "
                     f"position; {fed} of {len(d.steps)} common steps were fed the same token")
    if d.first_step is not None:
        s = d.steps[d.first_step]
        lines.append(f"first step choosing differently: step {s.index}: A {_tok(s.token_a)} vs B {_tok(s.token_b)}")
    else:
        lines.append(f"same chosen tokens in all {len(d.steps)} common steps")
    f = d.first_difference
    if f is not None:
        where = f" at position {f.position}" if f.position is not None else ""
        lines.append(f"first differing tensor: step {f.step} {inert(f.name, 120)}{list(f.index)}{where}: {f.a:.6g} vs {f.b:.6g}")
    if any(d.extra_steps):
        lines.append(f"steps only in A: {d.extra_steps[0]}, only in B: {d.extra_steps[1]}")
    worst = [row for row in d.diverging_layers(top) if row[2] > 0]
    if worst:
        scope = " (steps fed the same token)" if d.first_input_step is not None else ""
        lines.append(f"residual divergence at the predicting position{scope} (rel |b−a|/|a|, cos):")
        lines += [f"  step {s} layer {layer}: rel {rel:.3g}, cos {cos:.4f}" for s, layer, rel, cos in worst]
    return "\n".join(lines)


def tensor_summary(side: dict, name: str, step: int, n: int = 8) -> str:
    """Text of one drill-down: shape, the largest |b − a|, and the n most different elements side by side."""
    x, y, diff = side["a"], side["b"], side["diff"]
    head = f"step {step} {inert(name, 120)} {list(x.shape)}" + (" (aligned at the end)" if side["cropped"] else "")
    if not diff.size or not np.any(diff):
        return head + ": equal"
    flat = np.abs(diff).reshape(-1)
    top = np.argsort(-flat, kind="stable")[:n]
    lines = [head + f": {int(np.count_nonzero(diff))} of {diff.size} values differ, max |b−a| {float(flat.max()):.6g}",
             "  index                     A             B           b−a"]
    for i in top:
        if not flat[i]:
            break
        idx = np.unravel_index(int(i), diff.shape)
        lines.append(f"  {str(list(int(k) for k in idx)):<18} {float(x[idx]):>13.6g} {float(y[idx]):>13.6g} {float(diff[idx]):>+13.6g}")
    return "\n".join(lines)

