"""The sampler pipeline, recorded stage by stage.

raw logits → /temperature → top-k → top-p → min-p → softmax → chosen token (argmax when greedy,
else a draw from a seeded generator on the CPU, so a seed reproduces across devices).
The order is transformers' own (TemperatureLogitsWarper, TopK, TopP, MinP). Greedy decoding
ignores the temperature and takes the argmax of the raw logits, as `model.generate` does;
its record still carries the model's probabilities.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np
import torch

MIN_CANDIDATES = 20
MAX_CANDIDATES = 256


@dataclass
class SamplerSettings:
    do_sample: bool = False
    temperature: float = 1.0
    top_k: int = 0  # 0 = off
    top_p: float = 1.0  # 1.0 = off
    min_p: float = 0.0  # 0.0 = off
    seed: int = 0

    def validate(self) -> None:
        if not self.temperature > 0:
            raise ValueError("temperature must be > 0")
        if self.top_k < 0:
            raise ValueError("top-k must be >= 0")
        if not 0 < self.top_p <= 1:
            raise ValueError("top-p must be in (0, 1]")
        if not 0 <= self.min_p < 1:
            raise ValueError("min-p must be in [0, 1)")

    def as_dict(self) -> dict:
        return asdict(self)


def nucleus_size(sorted_probs: torch.Tensor, top_p: float) -> int:
    """Smallest prefix of `sorted_probs` (descending) whose mass reaches top_p."""
    nonzero = int((sorted_probs > 0).sum())
    if top_p >= 1.0:
        return nonzero
    cum = torch.cumsum(sorted_probs.double(), 0)
    n = int(torch.searchsorted(cum, torch.tensor([top_p], dtype=cum.dtype)).item()) + 1
    return max(1, min(n, nonzero))


def _entropy(probs: torch.Tensor) -> float:
    p = probs[probs > 0].double()
    return max(0.0, float(-(p * p.log()).sum()))  # a one-point distribution: 0, not -0.0


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
        scaled = raw / temperature  # [vocab]
        stages = [{"name": "raw", "kept": vocab}, {"name": "temperature", "kept": vocab}]

        filtered = scaled.clone()
        if 0 < s.top_k < vocab:
            kth = torch.topk(scaled, s.top_k).values[-1]
            filtered[scaled < kth] = -math.inf
        stages.append({"name": "top_k", "kept": int(torch.isfinite(filtered).sum())})
        temp_probs = torch.softmax(filtered, -1)  # [vocab] after temperature and top-k

        head_k = min(vocab, MAX_CANDIDATES)
        head = torch.topk(temp_probs, head_k)  # sorted descending; a full sort only when needed
        sorted_temp, order = head.values, head.indices  # [head_k]
        n_nucleus = nucleus_size(sorted_temp, s.top_p)
        if s.top_p < 1.0:
            if n_nucleus == head_k and head_k < vocab and float(sorted_temp.double().sum()) < s.top_p:
                order = torch.argsort(temp_probs, descending=True, stable=True)  # [vocab]
                sorted_temp = temp_probs[order]
                n_nucleus = nucleus_size(sorted_temp, s.top_p)
            keep = torch.zeros(vocab, dtype=torch.bool)
            keep[order[:n_nucleus]] = True
            filtered[~keep] = -math.inf
        else:
            n_nucleus = int((temp_probs > 0).sum())
        stages.append({"name": "top_p", "kept": int(torch.isfinite(filtered).sum())})
        if s.min_p > 0:
            p = torch.softmax(filtered, -1)
            filtered[p < s.min_p * p.max()] = -math.inf
        stages.append({"name": "min_p", "kept": int(torch.isfinite(filtered).sum())})
        probs = torch.softmax(filtered, -1)  # [vocab] final sampling distribution

        if s.do_sample:
            chosen = int(torch.multinomial(probs, 1, generator=self.generator).item())
        else:
            chosen = int(torch.argmax(raw).item())

        n_store = min(max(n_nucleus, MIN_CANDIDATES), vocab, MAX_CANDIDATES)
        ids = order[:n_store]  # [N]
        arrays = {
            "sample.candidate_ids": ids.numpy().astype(np.int64),
            "sample.candidate_logits": raw[ids].numpy(),
            "sample.candidate_raw_probs": raw_probs[ids].numpy(),
            "sample.candidate_temp_probs": sorted_temp[:n_store].numpy(),
            "sample.candidate_probs": probs[ids].numpy(),
            "sample.candidate_cumulative": torch.cumsum(sorted_temp[:n_store].double(), 0).float().numpy(),
        }
        top1 = int(torch.argmax(raw).item())
        record = {
            "greedy": not s.do_sample,
            "temperature": temperature,
            "top_k": s.top_k,
            "top_p": s.top_p,
            "min_p": s.min_p,
            "chosen_id": chosen,
            "chosen_rank": int((raw > raw[chosen]).sum()),
            "chosen_prob": float(probs[chosen]),
            "chosen_raw_prob": float(raw_probs[chosen]),
            "chosen_temp_prob": float(temp_probs[chosen]),
            "top1_id": top1,
            "top1_prob": float(raw_probs[top1]),
            "entropy": _entropy(probs),
            "raw_entropy": _entropy(raw_probs),
            "nucleus_size": n_nucleus,
            "nucleus_mass": float(sorted_temp[:n_nucleus].double().sum()),
            "stages": stages,
        }
        return chosen, record, arrays
