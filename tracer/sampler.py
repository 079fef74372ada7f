"""The sampler pipeline, recorded stage by stage (the pipeline itself: tracer/whatif.py, numpy).

raw logits → /temperature → top-k → top-p → min-p → softmax → chosen token (argmax when greedy,
else a draw from a seeded generator on the CPU, so a seed reproduces across devices).
The order is transformers' own (TemperatureLogitsWarper, TopK, TopP, MinP). Greedy decoding
ignores the temperature and takes the argmax of the raw logits, as `model.generate` does;
its record still carries the model's probabilities.
"""

from __future__ import annotations

import numpy as np
import torch

from .whatif import MAX_CANDIDATES, SamplerSettings, distribution, entropy, nucleus_size  # noqa: F401  (re-exported API)

MIN_CANDIDATES = 20


def _entropy(probs) -> float:
    """Entropy of a torch or numpy distribution (tracer/record.py)."""
    return entropy(probs.detach().float().cpu().numpy() if isinstance(probs, torch.Tensor) else np.asarray(probs))


class Sampler:
    def __init__(self, settings: SamplerSettings):
        settings.validate()
        self.settings = settings
        self.generator = torch.Generator(device="cpu")
        self.generator.manual_seed(settings.seed)

    def __call__(self, logits: torch.Tensor) -> tuple[int, dict, dict[str, np.ndarray]]:
        """logits [vocab] -> (chosen id, JSON record, candidate arrays)."""
        s = self.settings
        raw = logits.detach().float().cpu().numpy()  # [vocab]
        vocab = raw.shape[0]
        d = distribution(raw, s)
        if s.do_sample:
            chosen = int(torch.multinomial(torch.from_numpy(d.probs), 1, generator=self.generator).item())
        else:
            chosen = int(np.argmax(raw))

        n_store = min(max(d.n_nucleus, MIN_CANDIDATES), vocab, MAX_CANDIDATES)
        ids = d.order[:n_store]  # [N]
        sorted_temp = d.temp_probs[ids]  # [N]
        arrays = {
            "sample.candidate_ids": ids.astype(np.int64),
            "sample.candidate_logits": raw[ids],
            "sample.candidate_raw_probs": d.raw_probs[ids],
            "sample.candidate_temp_probs": sorted_temp,
            "sample.candidate_probs": d.probs[ids],
            "sample.candidate_cumulative": np.cumsum(sorted_temp.astype(np.float64)).astype(np.float32),
        }
        top1 = int(np.argmax(raw))
        record = {
            "greedy": not s.do_sample,
            "temperature": d.temperature,
            "top_k": s.top_k,
            "top_p": s.top_p,
            "min_p": s.min_p,
            "chosen_id": chosen,
            "chosen_rank": int((raw > raw[chosen]).sum()),
            "chosen_prob": float(d.probs[chosen]),
            "chosen_raw_prob": float(d.raw_probs[chosen]),
            "chosen_temp_prob": float(d.temp_probs[chosen]),
            "top1_id": top1,
            "top1_prob": float(d.raw_probs[top1]),
            "entropy": entropy(d.probs),
            "raw_entropy": entropy(d.raw_probs),
            "nucleus_size": d.n_nucleus,
            "nucleus_mass": float(d.temp_probs[d.order[: d.n_nucleus]].astype(np.float64).sum()),
            "stages": d.stages,
        }
        return chosen, record, arrays
