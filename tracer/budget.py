"""The recording budget for long prompts: an estimate before the run and the policy beyond it.

Policy (docs/TRACE_FORMAT.md, "Budget"): when the whole trace would exceed the budget, the
prefill's attention scores and pattern ([n_heads, T, T]) keep only their last ROWS_KEPT query
rows; every other row is recomputable exactly from the recorded hook_rot_q / hook_rot_k
(`step.attention_rows`). The step entry's "omitted" says which rows are not stored. If the
trace still does not fit, the run is refused before it starts, naming what would make it fit.

Memory (docs/RECORDING.md, "Memory"): a step is held in memory whole between its forward and its
write, unless the prefill would hold more than the memory budget; then it is streamed to disk as
the forward produces it, one block's tensors at a time (tracer/recorder.py, StepStream in
tracer/writer.py), and the recording holds about one block's tensors at once. If even one block
does not fit, the prefill's attention maps keep their last ROWS_KEPT rows as above; beyond that
the run is refused, naming what would make it fit.

`recording_plan` is the policy every recording applies (`stepscope trace`, `run`, `serve` and
`stepscope.record`): LiveSession plans before it writes anything, and refuses with BudgetError.
"""

from __future__ import annotations

import os
import re
import stat
from dataclasses import dataclass

from .estimate import names_bytes, step_bytes
from .names import NameFilter, block_name
from .trace_format import human_bytes

DEFAULT_BUDGET = 8 * 1024**3  # bytes: a laptop's spare disk for one trace
DEFAULT_MEMORY_BUDGET = 1024**3  # bytes: what a recording may hold at once (recorded tensors)
LOGIT_BLOCK_BYTES = 64 << 20  # a streamed prefill computes its logits about this many bytes at a time
ROWS_KEPT = 64
MARGIN = 1.1  # the estimate (tracer/estimate.py) came within 5% of real traces; keep 10% spare
_MAP_SUFFIXES = ("attn.hook_attn_scores", "attn.hook_pattern")
_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgt]?)i?b?\s*$", re.IGNORECASE)


def disk_bytes(path: str) -> int:
    """What a trace directory takes on disk: the apparent size of every entry under it, step files,
    manifest, log, tokenizer, lens file and branches alike (what `du --apparent-size -b` counts).
    Links are counted as links, never followed; entries that vanish while counting are skipped."""
    total = 0
    pending = [path]
    while pending:
        current = pending.pop()
        try:
            st = os.lstat(current)
        except OSError:
            continue
        total += st.st_size
        if stat.S_ISDIR(st.st_mode):
            try:
                pending += [os.path.join(current, name) for name in os.listdir(current)]
            except OSError:
                continue
    return total


def parse_size(text: str, option: str = "--budget") -> int:
    """"8G", "500MB", "1.5GiB", "1000000" -> bytes (ValueError otherwise, naming `option`)."""
    m = _SIZE.match(text or "")
    if not m:
        raise ValueError(f"{option}: {text!r} is not a size like 8G, 500M or 2000000000")
    value = float(m.group(1)) * {"": 1, "k": 1024, "m": 1024**2, "g": 1024**3, "t": 1024**4}[m.group(2).lower()]
    if value < 1 or value > 1 << 50:
        raise ValueError(f"{option}: {text!r} is out of range")
    return int(value)


class BudgetError(ValueError):
    """The trace would exceed its budget even with the prefill's attention maps trimmed (one line)."""


def budget_bytes(budget: int | str | None, default: int = DEFAULT_BUDGET, option: str = "--budget") -> int:
    """A budget in bytes: None is `default`, a string is a size like "8G" (`parse_size`)."""
    if budget is None:
        return default
    if isinstance(budget, str):
        return parse_size(budget, option)
    if int(budget) < 1:
        raise ValueError(f"{option.lstrip('-').replace('-', '_')}: {budget!r} is out of range")
    return int(budget)


def memory_budget_bytes(budget: int | str | None) -> int:
    """A memory budget in bytes: None is DEFAULT_MEMORY_BUDGET, a string is a size like "1G"."""
    return budget_bytes(budget, DEFAULT_MEMORY_BUDGET, "--memory-budget")


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
    prefill_bytes: int = 0  # the estimate of the prefill step alone
    decode_bytes: int = 0  # and of the first decode step
    memory: int = DEFAULT_MEMORY_BUDGET  # the memory budget: bytes of recorded tensors held at once
    streamed: bool = False  # the prefill is streamed to disk as the forward produces it
    held_bytes: int = 0  # estimated peak bytes the recording holds at once
    over_memory: bool = False  # refused for memory rather than disk

    def refusal(self) -> str:
        """The one-line reason a run that does not fit is refused."""
        if self.over_memory:
            return (f"the recording would hold about {human_bytes(self.held_bytes)} at once, over the memory budget of "
                    f"{human_bytes(self.memory)}; {self.advice}")
        return f"the trace would take about {human_bytes(self.total_bytes)}, over the budget of {human_bytes(self.budget)}; {self.advice}"

    def summary(self) -> str:
        """Two lines: the estimated size within the budget (and the rows trimmed to fit it), and
        what the recording holds in memory at once within the memory budget."""
        if self.row_limit and self.fits:
            disk = (f"budget {human_bytes(self.budget)}: the prefill's attention maps keep their last {self.row_limit} query rows "
                    f"(the others are recomputed from hook_rot_q/hook_rot_k when viewed); about {human_bytes(self.total_bytes)} "
                    f"instead of {human_bytes(self.full_bytes)}")
        else:
            disk = f"estimated trace size {human_bytes(self.total_bytes)} (budget {human_bytes(self.budget)})"
        if self.streamed:
            memory = (f"memory budget {human_bytes(self.memory)}: the prefill step is streamed to disk as the forward produces it, "
                      f"a block at a time; the recording holds about {human_bytes(self.held_bytes)} at once")
        else:
            memory = f"memory budget {human_bytes(self.memory)}: the recording holds about {human_bytes(self.held_bytes)} at once (a whole step)"
        return disk + "\n" + memory


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
    advice = ("raise --budget (budget=), record fewer names with --record (names=), store float16 with --store-dtype float16 "
              "(store_dtype=\"float16\"), or shorten the prompt")
    return Plan(full_or_trim, full, budget, ROWS_KEPT if can_trim and p > ROWS_KEPT else None, False, advice)


def recording_plan(names: list[str], facts: dict, keep: NameFilter, prompt_len: int, max_new_tokens: int,
                   itemsize: int, lens_k: int, budget: int, memory: int = DEFAULT_MEMORY_BUDGET) -> Plan:
    """The plan of a recording: `names` every name a step records (before `keep`), `facts` the model
    facts; `budget` bounds the disk, `memory` the bytes of recorded tensors held at once."""
    maps = [n for n in names if keep(n) and is_attention_map(n)]
    heads = facts["n_heads"]
    layers = range(facts["n_layers"])
    can_trim = all(keep(block_name(i, "attn.hook_rot_q")) and keep(block_name(i, "attn.hook_rot_k")) for i in layers) and not facts.get("attention_sink")

    def whole(t: int, s: int) -> int:
        return step_bytes(names, facts, keep, t, s, itemsize, lens_k)

    def map_bytes(t: int, s: int) -> int:
        return len(maps) * heads * t * s * itemsize

    result = plan(whole, map_bytes, prompt_len, max_new_tokens, budget, can_trim)
    result.prefill_bytes = whole(prompt_len, prompt_len)
    result.decode_bytes = whole(1, prompt_len + 1)
    if result.fits:
        memory_plan(result, names, facts, keep, prompt_len, max_new_tokens, itemsize, memory, can_trim, map_bytes)
    return result


def memory_plan(result: Plan, names: list[str], facts: dict, keep: NameFilter, p: int, n: int, itemsize: int,
                memory: int, can_trim: bool, map_bytes) -> None:
    """Apply the memory budget to `result` (a plan that fits the disk): hold the prefill whole when
    it fits, else stream it (one block held at once), trimming the prefill's maps if one block does
    not fit either; refuse when nothing fits. Decode steps are held whole."""
    result.memory = memory

    def held_whole(rows: int | None) -> int:
        trimmed = map_bytes(p, p) - map_bytes(min(p, rows), p) if rows else 0
        return names_bytes(names, facts, keep, p, p, itemsize) - trimmed

    def held_streamed(rows: int | None) -> int:
        """The biggest block's tensors with the head's (the last block leaves with them), and one
        block of logit rows. Blocks record the same names; block 0 stands for each."""
        block = [m for m in names if m.startswith("blocks.0.")]
        head = [m for m in names if not m.startswith("blocks.") and m != "logits"]
        total = names_bytes([m for m in block if not is_attention_map(m)] + head, facts, keep, p, p, itemsize)
        total += names_bytes([m for m in block if is_attention_map(m)], facts, keep, min(p, rows or p), p, itemsize)
        if keep("logits"):
            total += min(p * facts["vocab_size"] * itemsize, LOGIT_BLOCK_BYTES)
        return total

    rows = result.row_limit
    result.held_bytes = held_whole(rows)
    if result.held_bytes > memory and p > 1:
        result.streamed, result.held_bytes = True, held_streamed(rows)
        if result.held_bytes > memory and rows is None and can_trim and p > ROWS_KEPT:
            trimmed = held_streamed(ROWS_KEPT)
            if trimmed <= memory:
                result.row_limit = ROWS_KEPT
                result.total_bytes -= int(MARGIN * (map_bytes(p, p) - map_bytes(ROWS_KEPT, p)))
            result.held_bytes = trimmed  # what it holds, or the least it could (named in the refusal)
    decode = names_bytes(names, facts, keep, 1, p + n, itemsize)
    result.held_bytes = max(result.held_bytes, decode)
    if result.held_bytes > memory:
        result.fits, result.over_memory = False, True
        result.advice = ("raise --memory-budget (memory_budget=), record fewer names with --record (names=), store float16 with "
                         "--store-dtype float16 (store_dtype=\"float16\"), or shorten the prompt")
