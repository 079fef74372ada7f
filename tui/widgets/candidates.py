"""Candidates pane: the step's top-p nucleus the chosen token was drawn from.

One row per candidate: rank, token, id, probability after temperature, raw probability,
cumulative mass and a bar; the chosen token is marked `▶`; a line marks where the cumulative
mass passes top-p. Above the table: the sampler settings, the entropy, and the sampler pipeline
(raw → /T → top-k → top-p → min-p → chosen) with how many candidates each stage kept.

Reads only the step's `sample.*` arrays (a few hundred numbers).

Keys (when focused): ↑/↓ PageUp/PageDown scroll.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from rich.console import Group
from rich.table import Table
from rich.text import Text
from textual.containers import VerticalScroll
from textual.reactive import reactive
from textual.widgets import Static

from tui.widgets.common import fmt_num, fmt_prob, token_label

MAX_ROWS = 64
BAR_WIDTH = 10
_EIGHTHS = " ▏▎▍▌▋▊▉█"

STAGE_LABELS = {"raw": "raw", "temperature": "/T", "top_k": "top-k", "top_p": "top-p", "min_p": "min-p"}


@dataclass
class CandidateRow:
    rank: int
    token_id: int
    prob: float  # after temperature (and top-k)
    raw_prob: float
    final_prob: float
    cumulative: float
    chosen: bool
    in_nucleus: bool


def candidate_rows(step, limit: int = MAX_ROWS) -> tuple[list[CandidateRow], int]:
    """(rows, index after which the top-p cut-off line goes) for a step; pure numpy, no app."""
    if step is None or "sample.candidate_ids" not in step:
        return [], -1
    sampling = step.sampling or {}
    ids = np.asarray(step["sample.candidate_ids"])
    n = len(ids)
    shown = min(n, limit)
    temp = np.asarray(step["sample.candidate_temp_probs"][:shown], dtype=np.float64)
    raw = np.asarray(step["sample.candidate_raw_probs"][:shown], dtype=np.float64)
    final = np.asarray(step["sample.candidate_probs"][:shown], dtype=np.float64)
    cumulative = np.asarray(step["sample.candidate_cumulative"][:shown], dtype=np.float64)
    nucleus = int(sampling.get("nucleus_size") or n)
    chosen_id = sampling.get("chosen_id", (step.token or {}).get("id"))
    rows = [
        CandidateRow(
            rank=i,
            token_id=int(ids[i]),
            prob=float(temp[i]),
            raw_prob=float(raw[i]),
            final_prob=float(final[i]),
            cumulative=float(cumulative[i]),
            chosen=int(ids[i]) == chosen_id,
            in_nucleus=i < nucleus,
        )
        for i in range(shown)
    ]
    cutoff = nucleus - 1 if nucleus < n else -1
    return rows, cutoff


def bar(p: float, width: int = BAR_WIDTH) -> str:
    """A horizontal bar of `width` cells for a probability, in eighth blocks."""
    p = min(max(float(p), 0.0), 1.0) if p == p else 0.0
    eighths = int(round(p * width * 8))
    full, part = divmod(eighths, 8)
    out = "█" * full + (_EIGHTHS[part] if part and full < width else "")
    return out.ljust(width)


def sampler_lines(step, trace) -> list[Text]:
    """Settings + entropy line and pipeline line (plain Text, token text inert)."""
    s = step.sampling or {}
    mode = "greedy" if s.get("greedy") else "sampling"
    head = Text()
    head.append(mode, style="bold")
    head.append(
        f"  T={fmt_num(s.get('temperature'))} top_k={s.get('top_k', 0)} top_p={fmt_num(s.get('top_p'))} "
        f"min_p={fmt_num(s.get('min_p'))}"
    )
    head.append(f"   entropy {fmt_num(s.get('entropy'))} nats (raw {fmt_num(s.get('raw_entropy'))})")
    pipe = Text()
    for stage in s.get("stages") or []:
        pipe.append(STAGE_LABELS.get(stage.get("name"), str(stage.get("name"))), style="bold")
        pipe.append(f" {stage.get('kept')} → ")
    pipe.append("chosen ", style="bold")
    token = step.token or {}
    pipe.append_text(token_label(trace, token.get("id", -1)))
    pipe.append(f" (rank {s.get('chosen_rank', '?')}, p {fmt_prob(s.get('chosen_prob'))})")
    return [head, pipe]


class CandidatesPane(VerticalScroll, can_focus=True):
    """The sampling candidates of the current step. `trace` and `step` are set by the app."""

    COMPONENT_CLASSES = {"candidates--chosen", "candidates--cutoff", "candidates--outside", "candidates--bar"}

    step: reactive[int] = reactive(0)

    def __init__(self, trace=None, **kwargs) -> None:
        super().__init__(**kwargs)
        self._trace = trace
        self._body = Static(id="candidates-body")

    @property
    def trace(self):
        return self._trace

    @trace.setter
    def trace(self, value) -> None:
        self._trace = value
        self._update()

    def compose(self):
        yield self._body

    def on_mount(self) -> None:
        self._update()

    def watch_step(self) -> None:
        self._update()

    def _update(self) -> None:
        if not self.is_mounted:
            return
        self._body.update(self.render_candidates())

    def render_candidates(self):
        trace = self._trace
        if trace is None or not len(trace.steps):
            return Text("no step yet", style="dim")
        index = min(self.step, len(trace.steps) - 1)
        step = trace.steps[index]
        rows, cutoff = candidate_rows(step)
        if not rows:
            return Group(*sampler_lines(step, trace), Text("no candidates recorded for this step", style="dim"))
        style = self.get_component_rich_style
        chosen_style = style("candidates--chosen")
        outside_style = style("candidates--outside")
        bar_style = style("candidates--bar")
        table = Table(box=None, pad_edge=False, expand=False, show_edge=False, padding=(0, 1), header_style="bold")
        table.add_column("", width=1, no_wrap=True)
        table.add_column("#", justify="right", no_wrap=True)
        table.add_column("token", no_wrap=True, max_width=18, overflow="ellipsis")
        table.add_column("id", justify="right", no_wrap=True)
        table.add_column("p", justify="right", no_wrap=True)
        table.add_column("raw", justify="right", no_wrap=True)
        table.add_column("cum", justify="right", no_wrap=True)
        table.add_column("", no_wrap=True, width=BAR_WIDTH)
        top_p = (step.sampling or {}).get("top_p")
        for i, row in enumerate(rows):
            row_style = chosen_style if row.chosen else (outside_style if not row.in_nucleus else None)
            table.add_row(
                Text("▶" if row.chosen else ""),
                str(row.rank + 1),
                token_label(trace, row.token_id),
                str(row.token_id),
                fmt_prob(row.prob),
                fmt_prob(row.raw_prob),
                fmt_prob(row.cumulative),
                Text(bar(row.prob), style=bar_style),
                style=row_style,
            )
            if i == cutoff:
                cut = style("candidates--cutoff")
                table.add_row(
                    "", "", Text(f"── top-p {fmt_num(top_p)}", style=cut), Text("──", style=cut),
                    Text("─────", style=cut), Text("─────", style=cut), Text("─────", style=cut),
                    Text("─" * BAR_WIDTH, style=cut),
                )
        return Group(*sampler_lines(step, trace), table)
