"""Lines of the MLP routing of an MoE layer (for the tensor detail): the last position's chosen
experts with their weights, the router's full distribution as bars, then position by position
"token → experts e3 (0.41), e1 (0.22)". Token text is already escaped (`tui.views.mlp`)."""

from __future__ import annotations

import math

from rich.text import Text

from stepscope.tui.render.probbar import bar_chars
from stepscope.tui.render.spark import spark_chars
from stepscope.tui.text import STYLE_SPECIAL
from stepscope.tui.views.mlp import MlpRouting, Routing, format_choices

BAR = 16
MAX_BARS = 8  # more experts than this: a sparkline of all of them, then bars of the top ones


def _token(r: Routing) -> Text:
    return Text(r.text, style=STYLE_SPECIAL if r.special else "bold", end="")


def summary_line(mr: MlpRouting) -> Text:
    last = mr.last
    how = {True: " (weights renormalised)", False: " (weights = router probabilities)", None: ""}.get(last.renormalised, "")
    def choice(c) -> str:
        weight = f" → w {c.weight:.3f}" if last.renormalised and math.isfinite(c.weight) else ""
        return f"e{c.expert} {c.prob:.3f}{weight}"

    chosen = " · ".join(choice(c) for c in last.chosen)
    return Text.assemble(f"L{mr.layer} routing of {last.position}:", _token(last),
                         f" (last of {mr.n_positions}): top-{mr.top_k} ", (chosen, "bold"), how, no_wrap=True)


def bar_lines(mr: MlpRouting, budget: int) -> list[Text]:
    """The router distribution: one bar per expert (the chosen marked ◀), within `budget` lines."""
    if not mr.bars or budget <= 0:
        return []
    out: list[Text] = []
    bars = mr.bars
    if len(bars) > MAX_BARS or len(bars) > budget:
        spark = spark_chars([b.prob for b in bars], zero_blank=True)
        out.append(Text.assemble(f"router over {len(bars)} experts ", (spark, "cyan"), no_wrap=True))
        bars = sorted(bars, key=lambda b: -b.prob)[: max(0, min(MAX_BARS, budget - 1))]
    width = len(str(len(mr.bars) - 1)) + 1
    for b in bars:
        bar = (bar_chars(b.prob, BAR), "green" if b.chosen else "dim")
        out.append(Text.assemble(f" {'e' + str(b.expert):>{width}} ", bar, f" {b.prob:.3f}",
                                 (" ◀ chosen" if b.chosen else "", "bold"), no_wrap=True))
    return out


def position_lines(mr: MlpRouting, budget: int) -> list[Text]:
    """The last positions that fit in `budget` lines: `pos token → experts e3 (0.41), e1 (0.22)`."""
    if budget <= 1:
        return []
    shown = mr.positions[-(budget - 1):]
    earlier = mr.n_positions - len(shown)
    head = "per position (token → experts)" + (f", the last {len(shown)} of {mr.n_positions}" if earlier else "")
    out = [Text(head, style="dim", no_wrap=True)]
    for r in shown:
        out.append(Text.assemble(f" {r.position:>4}:", _token(r), " → experts ", format_choices(r.chosen),
                                 no_wrap=True, overflow="ellipsis"))
    return out


def routing_lines(mr: MlpRouting, budget: int, per_position: bool) -> list[Text]:
    """Summary, bars, and (for the routing tensors themselves) the per-position list."""
    if budget <= 0:
        return []
    out = [summary_line(mr)]
    rest = budget - 1
    if per_position:
        n_pos = min(len(mr.positions) + 1, max(2, rest // 2))
        bars = bar_lines(mr, rest - n_pos)
        return out + bars + position_lines(mr, rest - len(bars))
    return out + bar_lines(mr, rest)
