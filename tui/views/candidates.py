"""Candidate rows of a step's sampler and its pipeline summary, from `sample.candidate_*` arrays
and the step's sampling record. Ranks are 1-based everywhere (rank 1 = the largest logit)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from stepscope.tui.text import escape_for_display
from stepscope.tui.views.cache import cached
from stepscope.tui.views.vocab import token_texts

STAGE_LABELS = {"raw": "raw", "temperature": "/T", "top_k": "top-k", "top_p": "top-p", "min_p": "min-p"}


@dataclass(frozen=True)
class CandidateRow:
    rank: int  # 1-based, by logit (row index + 1)
    id: int
    text: str  # raw token text (display it with tui.text.display_token)
    special: bool
    prob: float  # final sampling probability
    temp_prob: float
    raw_prob: float
    logit: float | None
    cumulative: float  # cumulative of temp probs up to this row
    chosen: bool
    in_nucleus: bool  # inside the smallest prefix reaching top_p
    kept: bool = True  # survived top-k, top-p and min-p (final p > 0); greyed below the cut-off


@dataclass(frozen=True)
class Candidates:
    step: int
    rows: list[CandidateRow]
    cutoff: int | None  # index of the last kept row (draw the cut-off line after it), None: no cut
    chosen_index: int | None  # row of the chosen token, None if it is not among the candidates
    settings: str  # "greedy (argmax)" or "T=0.8 · top-k off · top-p 0.9 · min-p 0"
    stages: str  # "raw 49152 → /T 49152 → top-k 49152 → top-p 37 → min-p 37 → chosen ' Paris'"; "" greedy
    entropy: float | None
    raw_entropy: float | None
    greedy: bool = False
    cut_label: str = ""  # which filters made the cut-off: "top-p 0.9", "top-k 20 · min-p 0.05"


def settings_line(sampling: dict) -> str:
    if sampling.get("greedy"):
        return "greedy (argmax)"
    k = sampling.get("top_k") or 0
    return (f"T={sampling.get('temperature', 1.0):g} · top-k {k or 'off'} · "
            f"top-p {sampling.get('top_p', 1.0):g} · min-p {sampling.get('min_p', 0.0):g}")


def stages_line(sampling: dict, chosen_text: str = "") -> str:
    """The sampler pipeline with how many candidates each stage kept, ending at the chosen token."""
    parts = [f"{STAGE_LABELS.get(s['name'], s['name'])} {s['kept']}" for s in sampling.get("stages", [])]
    parts.append(f"chosen {chosen_text}".rstrip() if chosen_text else "chosen")
    return " → ".join(parts)


def _nucleus_size(sampling: dict, cumulative: np.ndarray) -> int:
    size = sampling.get("nucleus_size")
    if size is not None:
        return int(size)
    top_p = float(sampling.get("top_p", 1.0))
    if top_p >= 1.0:
        return len(cumulative)
    return int(np.searchsorted(cumulative, top_p - 1e-9) + 1)


def candidates(trace, step_index: int, limit: int | None = None) -> Candidates | None:
    """The step's candidates (best first, at most `limit`); None when `sample.*` was not recorded."""
    step = trace.steps[step_index]
    if "sample.candidate_ids" not in step:
        return None
    full = cached(step, "candidates", lambda: _build(trace, step))
    if limit is None or limit >= len(full.rows):
        return full
    rows = full.rows[:limit]
    cutoff = full.cutoff if full.cutoff is not None and full.cutoff < limit else None
    return Candidates(full.step, rows, cutoff, full.chosen_index, full.settings, full.stages, full.entropy,
                      full.raw_entropy, full.greedy, full.cut_label)


def _col(step, name: str, n: int) -> np.ndarray:
    return np.asarray(step[name], dtype=np.float64) if name in step else np.full(n, np.nan)  # [N]


def _build(trace, step) -> Candidates:
    ids = np.asarray(step["sample.candidate_ids"], dtype=np.int64)  # [N]
    n = ids.shape[0]
    probs, temp, raw = (_col(step, f"sample.candidate_{c}", n) for c in ("probs", "temp_probs", "raw_probs"))
    logits, cum = _col(step, "sample.candidate_logits", n), _col(step, "sample.candidate_cumulative", n)
    if np.isnan(cum).all() and not np.isnan(temp).all():
        cum = np.cumsum(temp)  # [N]
    sampling = step.sampling or {}
    chosen_id = int(sampling.get("chosen_id", step.token["id"]))
    nucleus = min(_nucleus_size(sampling, cum), n)
    texts = token_texts(trace)
    rows = []
    for i in range(n):
        text, special = texts(int(ids[i]))
        rows.append(CandidateRow(
            i + 1, int(ids[i]), text, special, float(probs[i]), float(temp[i]), float(raw[i]),
            None if np.isnan(logits[i]) else float(logits[i]), float(cum[i]), int(ids[i]) == chosen_id,
            i < nucleus, not probs[i] <= 0,
        ))
    chosen_index = next((i for i, r in enumerate(rows) if r.chosen), None)
    n_kept = sum(r.kept for r in rows)
    greedy = bool(sampling.get("greedy"))
    cutoff = n_kept - 1 if 0 < n_kept < n and not greedy else None  # greedy: argmax, no filters
    return Candidates(
        step.index, rows, cutoff, chosen_index, settings_line(sampling),
        "" if greedy else stages_line(sampling, f"'{escape_for_display(step.token.get('text', ''))}'"),
        sampling.get("entropy"), sampling.get("raw_entropy"), greedy, cut_label(sampling),
    )


def cut_label(sampling: dict) -> str:
    """The active filters that draw the cut-off line, e.g. "top-k 20 · top-p 0.9"."""
    parts = []
    if sampling.get("top_k"):
        parts.append(f"top-k {sampling['top_k']}")
    if float(sampling.get("top_p", 1.0)) < 1.0:
        parts.append(f"top-p {float(sampling['top_p']):g}")
    if float(sampling.get("min_p", 0.0)) > 0.0:
        parts.append(f"min-p {float(sampling['min_p']):g}")
    return " · ".join(parts)
