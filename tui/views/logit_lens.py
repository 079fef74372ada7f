"""Logit lens rows: per layer, the top-k tokens of unembed(ln_final(resid_post)) at the step's
last position, and where the finally chosen token stands."""

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
    chosen_rank: int | None  # 1-based rank of the chosen token in this layer's top-k; None if absent
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


def logit_lens(trace, step_index: int) -> LogitLens | None:
    """The lens of a step; None when `logit_lens.ids`/`probs` were not recorded."""
    step = trace.steps[step_index]
    if "logit_lens.ids" not in step or "logit_lens.probs" not in step:
        return None
    return cached(step, "logit_lens", lambda: _build(trace, step))


def _build(trace, step) -> LogitLens:
    ids = np.asarray(step["logit_lens.ids"], dtype=np.int64)  # [n_layers, k]
    probs = np.asarray(step["logit_lens.probs"], dtype=np.float64)  # [n_layers, k]
    texts = token_texts(trace)
    chosen = int(step.token["id"])
    hits = ids == chosen  # [n_layers, k]
    first = next((layer for layer in range(ids.shape[0]) if hits[layer, 0]), None)
    rows = []
    for layer in range(ids.shape[0]):
        top = [LensToken(int(i), *texts(int(i)), float(p)) for i, p in zip(ids[layer], probs[layer])]
        where = np.flatnonzero(hits[layer])
        index = int(where[0]) if where.size else None
        rows.append(LensRow(layer, top, None if index is None else index + 1,
                            float(probs[layer, index]) if index is not None else None, layer == first))
    return LogitLens(step.index, chosen, tok_text(step.token), bool(step.token.get("special")),
                     int(ids.shape[1]), rows, first)
