"""The sampling pipeline in numpy, and its replay on a recorded step: what other settings would
have kept, weighed and chosen. The same pipeline as tracer/sampler.py (torch), step for step;
tests/tracer/test_whatif.py checks the two agree (kept counts per stage, final probabilities).

raw logits → /temperature → top-k → top-p → min-p → softmax (transformers' order). Greedy
decoding ignores the temperature and takes the argmax of the raw logits.

    w = replay(step, WhatIfSettings(do_sample=True, temperature=1.3, top_p=0.9, seed=4))
    w.ids, w.probs, w.chosen          # kept candidates (most likely first), their final probabilities
    rows = side_by_side(step, w)      # (id, recorded final prob, what-if final prob) per candidate

Torch-free: the TUI's reading path never imports torch.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .sampler_settings import SamplerSettings

HEAD = 256  # candidates sorted first; the whole vocabulary only when top-p needs it


WhatIfSettings = SamplerSettings  # the settings of a replay: the live sampler's own


def softmax(x: np.ndarray) -> np.ndarray:
    """float32 softmax of a [vocab] vector (-inf entries get 0), summed in float64."""
    x = np.asarray(x, dtype=np.float64)
    e = np.exp(x - x.max())
    return (e / e.sum()).astype(np.float32)


def nucleus_size(sorted_probs, top_p: float) -> int:
    """Smallest prefix of `sorted_probs` (descending) whose mass reaches top_p."""
    p = np.asarray(sorted_probs, dtype=np.float64)
    nonzero = int((p > 0).sum())
    if top_p >= 1.0:
        return nonzero
    n = int(np.searchsorted(np.cumsum(p), top_p, side="left")) + 1
    return max(1, min(n, nonzero))


def _descending(p: np.ndarray, k: int) -> np.ndarray:
    """Indices of the k largest entries, largest first (ties: lower index first)."""
    if k >= p.shape[0]:
        return np.argsort(-p, kind="stable")
    part = np.argpartition(-p, k - 1)[:k]
    return part[np.lexsort((part, -p[part]))]


@dataclass
class Distribution:
    """Every stage of the pipeline on one [vocab] row of raw logits."""

    raw: np.ndarray  # [vocab] float32
    raw_probs: np.ndarray  # [vocab] softmax(raw)
    temperature: float  # the one applied (1.0 when greedy)
    temp_probs: np.ndarray  # [vocab] softmax(raw / T) after top-k
    order: np.ndarray  # [N >= HEAD or vocab] ids by temp_probs, descending
    n_nucleus: int
    probs: np.ndarray  # [vocab] final sampling distribution (0 outside the kept set)
    stages: list[dict] = field(default_factory=list)  # {"name", "kept"}

    @property
    def sorted_temp(self) -> np.ndarray:
        return self.temp_probs[self.order]


def distribution(raw, s) -> Distribution:
    """The pipeline on raw logits [vocab] with settings `s` (anything with do_sample, temperature,
    top_k, top_p, min_p)."""
    raw = np.asarray(raw, dtype=np.float32)
    vocab = raw.shape[0]
    temperature = float(s.temperature) if s.do_sample else 1.0
    scaled = raw / np.float32(temperature)  # [vocab]
    stages = [{"name": "raw", "kept": vocab}, {"name": "temperature", "kept": vocab}]
    filtered = scaled.copy()
    if 0 < s.top_k < vocab:
        kth = np.partition(scaled, vocab - s.top_k)[vocab - s.top_k]  # the top_k-th largest
        filtered[scaled < kth] = -np.inf
    stages.append({"name": "top_k", "kept": int(np.isfinite(filtered).sum())})
    temp_probs = softmax(filtered)  # [vocab] after temperature and top-k
    order = _descending(temp_probs, min(vocab, HEAD))
    n_nucleus = nucleus_size(temp_probs[order], s.top_p)
    if s.top_p < 1.0:
        if n_nucleus == len(order) < vocab and float(temp_probs[order].astype(np.float64).sum()) < s.top_p:
            order = _descending(temp_probs, vocab)
            n_nucleus = nucleus_size(temp_probs[order], s.top_p)
        keep = np.zeros(vocab, dtype=bool)
        keep[order[:n_nucleus]] = True
        filtered[~keep] = -np.inf
    else:
        n_nucleus = int((temp_probs > 0).sum())
    stages.append({"name": "top_p", "kept": int(np.isfinite(filtered).sum())})
    if s.min_p > 0:
        p = softmax(filtered)
        filtered[p < np.float32(s.min_p) * p.max()] = -np.inf
    stages.append({"name": "min_p", "kept": int(np.isfinite(filtered).sum())})
    return Distribution(raw, softmax(raw), temperature, temp_probs, order, n_nucleus, softmax(filtered), stages)


def entropy(probs: np.ndarray) -> float:
    """Entropy in nats (a one-point distribution: 0, not -0.0)."""
    p = probs[probs > 0].astype(np.float64)
    return max(0.0, float(-(p * np.log(p)).sum()))


def draw(probs: np.ndarray, u: float) -> int:
    """The token at uniform `u` in [0, 1) on the cumulative distribution (inverse CDF)."""
    cum = np.cumsum(probs.astype(np.float64))
    return int(min(np.searchsorted(cum, u * cum[-1], side="right"), len(cum) - 1))


@dataclass
class WhatIf:
    """The replay of one step under other settings."""

    settings: WhatIfSettings
    ids: np.ndarray  # [K] the kept candidates, most likely first
    probs: np.ndarray  # [K] their final probabilities
    chosen: int  # greedy: the argmax; sampled: the draw of replay's generator at (seed, step)
    chosen_prob: float
    stages: list[dict]
    exact: bool  # True: from the step's full logits; False: from its stored candidates only (renormalised)
    entropy: float


def raw_logits(step) -> tuple[np.ndarray, bool]:
    """([vocab] raw logits at the predicting position, exact). Without full logits: the stored
    candidates' logits, -inf elsewhere (their distribution renormalised over the candidates)."""
    if "logits" in step:
        return np.asarray(step["logits"][-1], dtype=np.float32), True
    ids = np.asarray(step["sample.candidate_ids"], dtype=np.int64)
    raw = np.full(int(ids.max()) + 1, -np.inf, dtype=np.float32)
    raw[ids] = np.asarray(step["sample.candidate_logits"], dtype=np.float32)
    return raw, False


def replay(step, settings: WhatIfSettings) -> WhatIf:
    """What the sampler would keep, weigh and choose at `step` under `settings` (numpy, no model).
    A sampled choice comes from numpy's generator seeded with (seed, step index): reproducible,
    but not the live run's torch draw (which the recorded token shows)."""
    settings.validate()
    raw, exact = raw_logits(step)
    d = distribution(raw, settings)
    kept = np.flatnonzero(d.probs > 0)
    ids = kept[np.lexsort((kept, -d.probs[kept]))]
    if settings.do_sample:
        rng = np.random.default_rng([int(settings.seed), int(step.index)])
        chosen = draw(d.probs, float(rng.random()))
    else:
        chosen = int(np.argmax(raw))
    return WhatIf(settings, ids, d.probs[ids], chosen, float(d.probs[chosen]), d.stages, exact, entropy(d.probs))


def side_by_side(step, w: WhatIf, n: int = 20) -> list[tuple[int, float, float]]:
    """(id, recorded final probability, what-if final probability) for the top n of either, in the
    order of the recorded candidates then the what-if's new ones."""
    rec_ids = [int(i) for i in step["sample.candidate_ids"]]
    rec = dict(zip(rec_ids, (float(p) for p in step["sample.candidate_probs"])))
    new = dict(zip((int(i) for i in w.ids), (float(p) for p in w.probs)))
    ids = rec_ids[:n] + [i for i in list(new)[:n] if i not in rec_ids[:n]]
    return [(i, rec.get(i, 0.0), new.get(i, 0.0)) for i in ids]
