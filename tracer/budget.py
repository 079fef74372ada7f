"""The recording budget for long prompts: an estimate before the run and the policy beyond it.

Policy (docs/TRACE_FORMAT.md, "Budget"): when the whole trace would exceed the budget, the
prefill's attention scores and pattern ([n_heads, T, T]) keep only their last ROWS_KEPT query
rows; every other row is recomputable exactly from the recorded hook_rot_q / hook_rot_k
(`step.attention_rows`). The step entry's "omitted" says which rows are not stored. If the
trace still does not fit, the run is refused before it starts, naming what would make it fit.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

DEFAULT_BUDGET = 8 * 1024**3  # bytes: a laptop's spare disk for one trace
ROWS_KEPT = 64
MARGIN = 1.1  # the estimate (tracer/estimate.py) came within 5% of real traces; keep 10% spare
_MAP_SUFFIXES = ("attn.hook_attn_scores", "attn.hook_pattern")
_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgt]?)i?b?\s*$", re.IGNORECASE)


def parse_size(text: str) -> int:
    """"8G", "500MB", "1.5GiB", "1000000" -> bytes (ValueError otherwise)."""
    m = _SIZE.match(text or "")
    if not m:
        raise ValueError(f"--budget: {text!r} is not a size like 8G, 500M or 2000000000")
    value = float(m.group(1)) * {"": 1, "k": 1024, "m": 1024**2, "g": 1024**3, "t": 1024**4}[m.group(2).lower()]
    if value < 1 or value > 1 << 50:
        raise ValueError(f"--budget: {text!r} is out of range")
    return int(value)


def is_attention_map(name: str) -> bool:
    return name.endswith(_MAP_SUFFIXES)


def trimmed_rows(name: str, shape: tuple, positions: tuple[int, int]) -> dict | None:
    """The "omitted" record of an attention map that holds fewer rows than its step's positions."""
    rows = positions[1] - positions[0]
    if not is_attention_map(name) or len(shape) != 3 or shape[1] >= rows:
        return None
    return {"rows": [0, rows - shape[1]], "reason": "budget", "recompute": "hook_rot_q, hook_rot_k"}


@dataclass
class Plan:
    """What a run will store: the estimate and the row limit applied to prefill attention maps."""

    total_bytes: int
    full_bytes: int
    budget: int
    row_limit: int | None
    fits: bool
    advice: str = ""


def plan(step_bytes, map_bytes, prompt_len: int, max_new_tokens: int, budget: int, can_trim: bool) -> Plan:
    """`step_bytes(t, s)` and `map_bytes(t, s)`: bytes of a whole step and of its attention maps
    computing t positions against s keys (tracer/estimate.py)."""
    p, n = prompt_len, max_new_tokens
    decode = sum(step_bytes(1, p + i) for i in range(1, n)) if n < 256 else (n - 1) * step_bytes(1, p + n // 2)
    full = int(MARGIN * (step_bytes(p, p) + decode))
    if full <= budget:
        return Plan(full, full, budget, None, True)
    if can_trim and p > ROWS_KEPT:
        trimmed = full - int(MARGIN * (map_bytes(p, p) - map_bytes(ROWS_KEPT, p)))
        if trimmed <= budget:
            return Plan(trimmed, full, budget, ROWS_KEPT, True)
        full_or_trim = trimmed
    else:
        full_or_trim = full
    advice = "raise --budget, record fewer names with --record, store float16 with --store-dtype float16, or shorten the prompt"
    return Plan(full_or_trim, full, budget, ROWS_KEPT if can_trim and p > ROWS_KEPT else None, False, advice)
