"""The sampler pipeline, recorded stage by stage.

raw logits → /temperature → top-k → top-p → min-p → softmax → chosen token (argmax when greedy,
else a draw from a seeded generator on the CPU, so a seed reproduces across devices).
The order is transformers' own (TemperatureLogitsWarper, TopK, TopP, MinP). Greedy decoding
ignores the temperature and takes the argmax of the raw logits, as `model.generate` does;
its record still carries the model's probabilities.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from .sampler_settings import SamplerSettings

MIN_CANDIDATES = 20
HEAD_CANDIDATES = 256  # stored when nothing is filtered out (pure temperature / greedy)
TAIL_CANDIDATES = 20  # stored past the last kept candidate, to show what the filters removed
MAX_CANDIDATES = 4096


def nucleus_size(sorted_probs: torch.Tensor, top_p: float) -> int:
    """Smallest prefix of `sorted_probs` (descending) whose mass reaches top_p."""
    nonzero = int((sorted_probs > 0).sum())
    if top_p >= 1.0:
        return nonzero
    cum = torch.cumsum(sorted_probs.double(), 0)
    n = int(torch.searchsorted(cum, torch.tensor([top_p], dtype=cum.dtype)).item()) + 1
    return max(1, min(n, nonzero))


def entropy(probs: torch.Tensor) -> float:
    """-sum p·ln p in float64 (0·ln 0 = 0)."""
    return max(0.0, float(torch.special.entr(probs.double()).sum()))  # a one-point distribution: 0, not -0.0


class Sampler:
    def __init__(self, settings: SamplerSettings):
        settings.validate()
        self.settings = settings
        self.generator = torch.Generator(device="cpu")
        self.generator.manual_seed(settings.seed)

    def __call__(self, logits: torch.Tensor) -> tuple[int, dict, dict[str, np.ndarray]]:
        """logits [vocab] -> (chosen id, JSON record, candidate arrays)."""
        s = self.settings
        raw = logits.detach().float().cpu()  # [vocab]
        vocab = raw.shape[0]
        raw_probs = torch.softmax(raw, -1)  # [vocab]
        temperature = s.temperature if s.do_sample else 1.0
        scaled = raw / temperature if temperature != 1.0 else raw  # [vocab] (x / 1.0 is x)
        stages = [{"name": "raw", "kept": vocab}, {"name": "temperature", "kept": vocab}]

        # `filtered` is replaced, never written in place, so an unfiltered stage reuses what it had
        filtered = scaled
        n_kept = int(torch.isfinite(filtered).sum())
        if 0 < s.top_k < vocab:
            kth = torch.topk(scaled, s.top_k).values[-1]
            filtered = scaled.masked_fill(scaled < kth, -math.inf)
            n_kept = int(torch.isfinite(filtered).sum())
        stages.append({"name": "top_k", "kept": n_kept})
        temp_probs = raw_probs if filtered is raw else torch.softmax(filtered, -1)  # [vocab] after temperature and top-k
        after_top_k = filtered

        # candidates in order of scaled logit: the same order as temp_probs for the tokens top-k
        # kept, and a meaningful order for the ones it removed (their temp_prob is 0)
        head_k = min(vocab, HEAD_CANDIDATES)
        order = torch.topk(scaled, head_k).indices  # [head_k] a full sort only when needed
        n_nucleus = nucleus_size(temp_probs[order], s.top_p)
        if s.top_p < 1.0 and n_nucleus + TAIL_CANDIDATES > head_k and head_k < vocab:
            order = torch.argsort(scaled, descending=True, stable=True)  # [vocab]
            n_nucleus = nucleus_size(temp_probs[order], s.top_p)
        if s.top_p < 1.0:
            keep = torch.zeros(vocab, dtype=torch.bool)
            keep[order[:n_nucleus]] = True
            filtered = filtered.masked_fill(~keep, -math.inf)
            n_kept = int(torch.isfinite(filtered).sum())
        else:
            n_nucleus = int((temp_probs > 0).sum())
        stages.append({"name": "top_p", "kept": n_kept})
        if s.min_p > 0:
            p = torch.softmax(filtered, -1)
            filtered = filtered.masked_fill(p < s.min_p * p.max(), -math.inf)
            n_kept = int(torch.isfinite(filtered).sum())
        stages.append({"name": "min_p", "kept": n_kept})
        probs = temp_probs if filtered is after_top_k else torch.softmax(filtered, -1)  # [vocab] final sampling distribution

        top1 = int(torch.argmax(raw).item())
        if s.do_sample:
            chosen = int(torch.multinomial(probs, 1, generator=self.generator).item())
        else:
            chosen = top1

        nucleus_mass = float(temp_probs[order[:n_nucleus]].double().sum()) if s.top_p < 1.0 else 1.0
        filtering = n_kept < vocab  # top-k/top-p/min-p removed something: show the removed tail
        wanted = n_kept + TAIL_CANDIDATES if filtering else HEAD_CANDIDATES
        n_store = min(max(wanted, MIN_CANDIDATES), vocab, MAX_CANDIDATES)
        if n_store > len(order):
            order = torch.topk(scaled, n_store).indices  # [N]
        ids = order[:n_store]  # [N]
        sorted_temp = temp_probs[ids]  # [N]
        arrays = {
            "sample.candidate_ids": ids.numpy().astype(np.int64),
            "sample.candidate_logits": raw[ids].numpy(),
            "sample.candidate_raw_probs": raw_probs[ids].numpy(),
            "sample.candidate_temp_probs": sorted_temp.numpy(),
            "sample.candidate_probs": probs[ids].numpy(),
            "sample.candidate_cumulative": torch.cumsum(sorted_temp.double(), 0).float().numpy(),
        }
        raw_entropy = entropy(raw_probs)
        record = {
            "greedy": not s.do_sample,
            "temperature": temperature,
            "top_k": s.top_k,
            "top_p": s.top_p,
            "min_p": s.min_p,
            "chosen_id": chosen,
            "chosen_rank": 0 if chosen == top1 else int((raw > raw[chosen]).sum()),  # argmax: nothing above it
            "chosen_prob": float(probs[chosen]),
            "chosen_raw_prob": float(raw_probs[chosen]),
            "chosen_temp_prob": float(temp_probs[chosen]),
            "top1_id": top1,
            "top1_prob": float(raw_probs[top1]),
            "entropy": raw_entropy if probs is raw_probs else entropy(probs),
            "raw_entropy": raw_entropy,
            "nucleus_size": n_nucleus,
            "nucleus_mass": nucleus_mass,
            "stages": stages,
        }
        return chosen, record, arrays
