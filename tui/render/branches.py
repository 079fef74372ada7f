"""The effect of a branch on the chosen token's probability, next to the run it left."""

from __future__ import annotations

from rich.text import Text

from stepscope.tracer.inert import inert
from stepscope.tui.render.lines import token
from stepscope.tui.views.branches import branch_effect


def _p(x) -> str:
    return "—" if x is None else f"{x:.3f}"


def effect_lines(branch, parent, step: int) -> list[Text]:
    """At `step`: the token each run chose and its probability in both runs (raw softmax), when
    `branch` is a branch of `parent` and the step is at or after the branch point."""
    e = branch_effect(branch, parent, step)
    if e is None:
        return []
    lines = [Text.assemble(("effect ", "bold"), f"step {step}: original chose ", token(parent, e["parent_token"]),
                           f" p {_p(e['parent_token_prob']['parent'])} → here {_p(e['parent_token_prob']['branch'])}"),
             Text.assemble("  this run chose ", token(branch, e["branch_token"]),
                           f" p {_p(e['branch_token_prob']['branch'])} (original {_p(e['branch_token_prob']['parent'])})")]
    marks = (["forced"] if e["forced"] else []) + ([f"intervened: {inert(', '.join(e['intervened']), 80)}"] if e["intervened"] else [])
    if not e["same_context"]:
        marks.append("earlier tokens differ")
    if marks:
        lines.append(Text("  " + " · ".join(marks), style="dim"))
    return lines
