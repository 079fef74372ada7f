"""Direct logit attribution at one step: why this token and not that one, in numpy (torch-free).

logit(target) − logit(other) at the step's predicting (last) position is split into what each
part of the residual stream writes along the unembedding direction
`d = W_U[:, target] − W_U[:, other]`, through the final norm with its scale FROZEN at that
position (the usual convention, TransformerLens's `apply_ln`):

    diff = Σ_parts part · ((w_final + offset) ⊙ d / scale_final)     (LayerNorm: centred first)
           + b_final · d + (b_U[target] − b_U[other]) [+ soft-cap correction]

Parts: the embedding (the residual entering block 0, less the positional embedding), the
positional embedding, and per layer its attention (each head's `attn.hook_result` row plus
the output bias) and its MLP; a block without those recorded counts as one part (its
resid_post − resid_pre). Where a block has post-norms (`ln1_post` / `ln2_post` recorded, their
weights in `lens.safetensors`), a part passes through the post-norm with its scale frozen too
(the post-norm's bias is its own term). The parts and the bias terms sum to the recorded logit
difference. With a final logit soft-cap the split is of the pre-cap difference and the
`softcap` term is the rest.

    attr = attribute(trace, step_index)                  # chosen vs runner-up
    attr.words(5)    # "L1 MLP +3.10, head 0.2 +1.80, embed −0.52, ..."
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass, field

import numpy as np

from .lens import B_U, NORM_B, NORM_W, W_U, canonical
from .safe_io import read_trace_file
from .safetensors_read import safetensors_arrays
from .trace_format import LENS_FILE, TraceError

MAX_LENS_BYTES = 16 << 30  # lens.safetensors: W_U of a large vocabulary in float32


@dataclass(frozen=True)
class Term:
    """One additive part of the logit difference."""

    kind: str  # embed | pos_embed | head | attn_bias | attn | mlp | block | post_norm_bias | norm_bias | unembed_bias | softcap
    value: float
    layer: int | None = None
    head: int | None = None

    @property
    def label(self) -> str:
        """Short words: "L3 MLP", "head 3.5", "embed"."""
        names = {"attn": "attn", "mlp": "MLP", "block": "block", "attn_bias": "attn bias", "post_norm_bias": "post-norm bias"}
        if self.kind == "head":
            return f"head {self.layer}.{self.head}"
        if self.layer is not None:
            return f"L{self.layer} {names.get(self.kind, self.kind)}"
        return {"pos_embed": "pos embed", "norm_bias": "ln_final bias", "unembed_bias": "b_U", "softcap": "soft-cap"}.get(self.kind, self.kind)


@dataclass
class Attribution:
    """logit(target) − logit(other) at one step, split into terms that sum to it."""

    step: int
    target: int
    other: int
    actual: float  # the recorded logit difference
    terms: list[Term] = field(default_factory=list)  # leaves: they sum to `actual` (heads, not their layer totals)
    layers: list[dict] = field(default_factory=list)  # per layer {"attn": float | None, "mlp": float | None, "block": float | None}

    @property
    def total(self) -> float:
        """Σ terms (== actual up to float rounding)."""
        return float(sum(t.value for t in self.terms))

    def heads(self, layer: int) -> list[Term]:
        """The heads of one layer, in head order."""
        return [t for t in self.terms if t.kind == "head" and t.layer == layer]

    def components(self) -> list[Term]:
        """Layer-level parts: embeddings, each layer's attention (heads + bias summed) and MLP, biases."""
        out = [t for t in self.terms if t.layer is None]
        for i, row in enumerate(self.layers):
            for kind in ("attn", "mlp", "block"):
                if row.get(kind) is not None:
                    out.append(Term(kind, row[kind], i))
        return out

    def top(self, n: int = 5, heads: bool = True) -> list[Term]:
        """The n largest contributors by |value| (heads instead of their layer's attention when `heads`)."""
        pool = [t for t in self.terms if t.kind not in ("attn_bias",)] if heads else self.components()
        return sorted(pool, key=lambda t: -abs(t.value))[:n]

    def words(self, n: int = 5) -> str:
        """"L1 MLP +3.10, head 0.2 +1.80, ..." (the top contributors, heads split out)."""
        return ", ".join(f"{t.label} {t.value:+.2f}" for t in self.top(n))


_LENS_ARRAYS: weakref.WeakKeyDictionary[object, dict[str, np.ndarray]] = weakref.WeakKeyDictionary()


def lens_arrays(trace) -> dict[str, np.ndarray]:
    """`lens.safetensors` of a trace as {name: float array} (read_lens_arrays, cached per trace)."""
    cached = _LENS_ARRAYS.get(trace)
    if cached is None:
        cached = _LENS_ARRAYS[trace] = read_lens_arrays(trace)
    return cached


def lens_loaded(trace) -> bool:
    """Whether `lens_arrays(trace)` is cached (answers without reading)."""
    return trace in _LENS_ARRAYS


def keep_lens_arrays(trace, arrays: dict[str, np.ndarray]) -> None:
    """Cache arrays `read_lens_arrays` read elsewhere (a worker thread) as the trace's."""
    _LENS_ARRAYS[trace] = arrays


def read_lens_arrays(trace) -> dict[str, np.ndarray]:
    """`lens.safetensors` of a trace (anything with `path`, `model` and optionally `root`) as
    {name: float array}, read through the safe reader now."""
    facts = trace.model.get("lens")
    if not facts:
        raise TraceError("no attribution: this trace has no lens.safetensors (its final norm is not one stepscope reproduces)")
    try:  # a branch: lens.safetensors is in its root trace
        data = read_trace_file(getattr(trace, "root", None) or trace.path, facts.get("file", LENS_FILE), MAX_LENS_BYTES)
    except FileNotFoundError:
        raise TraceError(f"{trace.path}: {LENS_FILE} missing") from None
    try:
        arrays = canonical(safetensors_arrays(data, LENS_FILE))
    except Exception as exc:  # a damaged file: one line, not a traceback
        raise TraceError(f"{trace.path}: {LENS_FILE}: not a safetensors file ({type(exc).__name__})") from None
    if NORM_W not in arrays or W_U not in arrays:
        raise TraceError(f"{trace.path}: {LENS_FILE} lacks {NORM_W} or {W_U}")
    return arrays


def _row(step, name: str) -> np.ndarray | None:
    """The last row of a recorded [T, ...] tensor as float64, None when not recorded."""
    return np.asarray(step[name][-1], dtype=np.float64) if name in step else None


def _need(step, name: str) -> np.ndarray:
    if name not in step:
        raise TraceError(f"no attribution: step {step.index} lacks {name} (record it: --keep must include it)")
    return np.asarray(step[name], dtype=np.float64)


def _through_norm(g: np.ndarray, weight: np.ndarray, offset: float, scale: float, kind: str) -> np.ndarray:
    """The direction v ↦ v·g becomes, read through a norm with frozen scale: v·((w + offset) ⊙ g / scale), centred for LayerNorm."""
    out = (weight + offset) * g / scale  # [d_model]
    return out - out.mean() if kind == "layernorm" else out


def runner_up(step, target: int) -> int:
    """The most likely token other than `target` at the step (raw logits, else the stored candidates)."""
    if "logits" in step:
        row = np.asarray(step["logits"][-1], dtype=np.float64)  # [vocab]
        order = np.argsort(-row, kind="stable")[:2]
        return int(order[1] if order[0] == target else order[0])
    ids = [int(i) for i in step["sample.candidate_ids"] if int(i) != target]
    if not ids:
        raise TraceError(f"no attribution: step {step.index} stores no other candidate")
    return ids[0]


def _actual(step, target: int, other: int) -> float | None:
    """The recorded logit difference (full logits, else the stored candidates' raw logits)."""
    if "logits" in step:
        row = step["logits"][-1]
        return float(np.float64(row[target]) - np.float64(row[other]))
    if "sample.candidate_ids" in step:
        ids = [int(i) for i in step["sample.candidate_ids"]]
        if target in ids and other in ids:
            raw = np.asarray(step["sample.candidate_logits"], dtype=np.float64)
            return float(raw[ids.index(target)] - raw[ids.index(other)])
    return None


def attribute(trace, step_index: int, target: int | None = None, other: int | None = None) -> Attribution:
    """Direct logit attribution of logit(target) − logit(other) at a step (default: the chosen token
    against the runner-up). Raises TraceError with one line when the trace lacks what it needs."""
    if not 0 <= step_index < len(trace.steps):
        raise TraceError(f"no step {step_index} (the trace has {len(trace.steps)})")
    step = trace.steps[step_index]
    facts = trace.model
    lens = facts.get("lens") or {}
    arrays = lens_arrays(trace)
    target = int(step.token["id"]) if target is None else int(target)
    other = runner_up(step, target) if other is None else int(other)
    w_u = arrays[W_U]  # [d_model, vocab]
    vocab = w_u.shape[1]
    if not (0 <= target < vocab and 0 <= other < vocab) or target == other:
        raise TraceError(f"no attribution: tokens {target} and {other} must differ and lie in [0, {vocab})")
    kind, eps, offset = lens["norm"], float(lens["eps"]), float(lens.get("weight_offset") or 0.0)
    n_layers = int(facts["n_layers"])

    resid_final = _need(step, f"blocks.{n_layers - 1}.hook_resid_post")[-1]  # [d_model] input of ln_final
    if "ln_final.hook_scale" in step:
        scale = float(np.asarray(step["ln_final.hook_scale"][-1], dtype=np.float64)[0])
    else:
        x = resid_final - resid_final.mean() if kind == "layernorm" else resid_final
        scale = float(np.sqrt((x * x).mean() + eps))
    d = np.asarray(w_u[:, target], dtype=np.float64) - np.asarray(w_u[:, other], dtype=np.float64)  # [d_model]
    g = _through_norm(d, np.asarray(arrays[NORM_W], dtype=np.float64), offset, scale, kind)  # [d_model]

    terms: list[Term] = []
    pos = _row(step, "hook_pos_embed")
    embed = _need(step, "blocks.0.hook_resid_pre")[-1] - (pos if pos is not None else 0.0)  # [d_model] as the model scales it
    terms.append(Term("embed", float(embed @ g)))
    if pos is not None:
        terms.append(Term("pos_embed", float(pos @ g)))
    layers = []
    for i in range(n_layers):
        layers.append(_layer_terms(step, arrays, i, g, offset, kind, terms))
    if NORM_B in arrays:
        terms.append(Term("norm_bias", float(np.asarray(arrays[NORM_B], dtype=np.float64) @ d)))
    if B_U in arrays:
        b_u = arrays[B_U]
        terms.append(Term("unembed_bias", float(np.float64(b_u[target]) - np.float64(b_u[other]))))
    pre_cap = float(sum(t.value for t in terms))
    actual = _actual(step, target, other)
    cap = float(lens.get("softcap") or 0.0)
    if actual is None:  # neither logits nor both candidates stored: the lens's own logits of the final residual
        normed = _normed(resid_final, scale, kind) * (np.asarray(arrays[NORM_W], dtype=np.float64) + offset)
        if NORM_B in arrays:
            normed = normed + np.asarray(arrays[NORM_B], dtype=np.float64)
        logit = {t: float(normed @ np.asarray(w_u[:, t], dtype=np.float64)) + (float(arrays[B_U][t]) if B_U in arrays else 0.0)
                 for t in (target, other)}
        if cap:
            logit = {t: cap * float(np.tanh(v / cap)) for t, v in logit.items()}
        actual = logit[target] - logit[other]
    if cap:
        terms.append(Term("softcap", actual - pre_cap))
    return Attribution(step_index, target, other, actual, terms, layers)


def _normed(x: np.ndarray, scale: float, kind: str) -> np.ndarray:
    """x / scale (LayerNorm: centred first): TransformerLens's hook_normalized."""
    return (x - x.mean() if kind == "layernorm" else x) / scale


def _layer_terms(step, arrays, i: int, g: np.ndarray, offset: float, kind: str, terms: list[Term]) -> dict:
    """Append layer i's terms; return its {"attn", "mlp", "block"} totals."""
    p = f"blocks.{i}."
    attn_out, mlp_out = _row(step, p + "hook_attn_out"), _row(step, p + "hook_mlp_out")
    if attn_out is None or mlp_out is None:  # the block as one part (generic fallback, filtered names)
        value = float((_need(step, p + "hook_resid_post")[-1] - _need(step, p + "hook_resid_pre")[-1]) @ g)
        terms.append(Term("block", value, i))
        return {"attn": None, "mlp": None, "block": value}
    totals: dict[str, float | None] = {"block": None}
    for sub, out in (("attn", attn_out), ("mlp", mlp_out)):
        post = f"{p}{'ln1' if sub == 'attn' else 'ln2'}_post"
        g_sub, post_bias = g, 0.0
        if post + ".hook_out" in step:  # a post-norm between the sublayer and the residual stream
            if post + ".hook_scale" not in step or f"{post}.w" not in arrays:
                value = float(_row(step, post + ".hook_out") @ g)  # the layer total only
                terms.append(Term(sub, value, i))
                totals[sub] = value
                continue
            s = float(_need(step, post + ".hook_scale")[-1][0])
            g_sub = _through_norm(g, np.asarray(arrays[f"{post}.w"], dtype=np.float64), offset, s, kind)
            if f"{post}.b" in arrays:
                post_bias = float(np.asarray(arrays[f"{post}.b"], dtype=np.float64) @ g)
        start = len(terms)
        if sub == "attn" and p + "attn.hook_result" in step:
            result = np.asarray(step[p + "attn.hook_result"], dtype=np.float64)  # [n_heads, d_model]
            per_head = result @ g_sub  # [n_heads]
            terms += [Term("head", float(v), i, h) for h, v in enumerate(per_head)]
            terms.append(Term("attn_bias", float((out - result.sum(0)) @ g_sub), i))
        else:
            terms.append(Term(sub, float(out @ g_sub), i))
        if post_bias:
            terms.append(Term("post_norm_bias", post_bias, i))
        totals[sub] = float(sum(t.value for t in terms[start:]))
    return totals
