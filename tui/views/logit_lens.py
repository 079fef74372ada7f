"""Logit lens rows: per layer, the top-k tokens of unembed(ln_final(resid_post)) at the step's
last position, and where the finally chosen token (or any token asked for) stands: its exact rank
and probability over the whole vocabulary when the trace stores the final norm and W_U
(`lens.safetensors`) and the step the residual rows, else only within the recorded top-k."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from stepscope.tui.views.cache import cached
from stepscope.tui.views.vocab import tok_text, token_texts


@dataclass(frozen=True)
class LensToken:
    id: int
    text: str
    special: bool
    prob: float


@dataclass(frozen=True)
class LensRow:
    layer: int
    top: list[LensToken]  # best first
    chosen_rank: int | None  # 1-based rank of the token asked for (exact, or in the top-k; None if absent)
    chosen_prob: float | None
    first_top1: bool  # the first layer where the chosen token is top-1

    @property
    def top1(self) -> LensToken:
        return self.top[0]


@dataclass(frozen=True)
class LogitLens:
    step: int
    chosen_id: int
    chosen_text: str
    chosen_special: bool
    k: int
    rows: list[LensRow]
    first_top1_layer: int | None  # where the answer first appears as top-1
    exact: bool = False  # ranks and probabilities of the token over the whole vocabulary (from W_U)


def trace_lens(trace):
    """The trace's logit lens (final norm + W_U, `tracer.lens.LogitLens`) or None."""
    lens = getattr(trace, "lens", None)
    lens = lens() if callable(lens) else lens
    return lens if lens is not None and hasattr(lens, "logits") and hasattr(lens, "rows") else None


def exact_token_stats(trace, step, token_id: int) -> tuple[np.ndarray, np.ndarray] | None:
    """(probs [n_layers], ranks [n_layers]) of `token_id` at every layer, exact from the stored W_U;
    None when the trace has no lens or the step lacks the residual rows."""
    lens = trace_lens(trace)
    if lens is None or not hasattr(lens, "token_stats") or not lens.has_rows(step):
        return None
    probs, ranks = lens.token_stats(lens.rows(step), [token_id])
    return probs[:, 0], ranks[:, 0]


def logit_lens(trace, step_index: int, token_id: int | None = None) -> LogitLens | None:
    """The lens of a step, where `token_id` (default: the chosen token) stands at every layer; None
    when `logit_lens.ids`/`probs` were not recorded."""
    step = trace.steps[step_index]
    if "logit_lens.ids" not in step or "logit_lens.probs" not in step:
        return None
    return cached(step, ("logit_lens", token_id), lambda: _build(trace, step, token_id))


def _build(trace, step, token_id: int | None) -> LogitLens:
    ids = np.asarray(step["logit_lens.ids"], dtype=np.int64)  # [n_layers, k]
    probs = np.asarray(step["logit_lens.probs"], dtype=np.float64)  # [n_layers, k]
    texts = token_texts(trace)
    chosen = int(step.token["id"]) if token_id is None else int(token_id)
    hits = ids == chosen  # [n_layers, k]
    first = next((layer for layer in range(ids.shape[0]) if hits[layer, 0]), None)
    exact = exact_token_stats(trace, step, chosen)  # ([n_layers], [n_layers]) or None
    rows = []
    for layer in range(ids.shape[0]):
        rank: int | None
        prob: float | None
        top = [LensToken(int(i), *texts(int(i)), float(p)) for i, p in zip(ids[layer], probs[layer])]
        if exact is not None:
            rank, prob = int(exact[1][layer]), float(exact[0][layer])
        else:
            where = np.flatnonzero(hits[layer])
            rank = int(where[0]) + 1 if where.size else None
            prob = float(probs[layer, where[0]]) if where.size else None
        rows.append(LensRow(layer, top, rank, prob, layer == first))
    text, special = (tok_text(step.token), bool(step.token.get("special"))) if token_id is None else texts(chosen)
    return LogitLens(step.index, chosen, text, special, int(ids.shape[1]), rows, first, exact is not None)
