"""The sampler's settings, torch-free: the live sampler (tracer/sampler.py) and the replay of other
settings on a recorded step (tracer/whatif.py) share this one definition."""

from __future__ import annotations

from dataclasses import dataclass


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
