"""The tensor inspector's detail panel: shape, dtype, operation, statistics and histogram of the
selected tensor; on a mixture-of-experts model, for MLP names, the layer's routing (chosen
experts with weights, router bars, and per position for the routing tensors). A plain render
(fixed height in panes.tcss, taller for MoE models), so an update never re-lays-out."""

from __future__ import annotations

import re

from rich.cells import cell_len
from rich.console import Group, RenderableType
from rich.text import Text
from textual.widget import Widget

from stepscope.tui.render.spark import Histogram
from stepscope.tui.views.mlp import EXPERT_IDS, ROUTER, MlpRouting
from stepscope.tui.views.tensors import TensorSummary, format_number
from stepscope.tui.widgets.routing import routing_lines


def wrap_op(op: str, width: int) -> Text:
    """An op line broken between its terms (` → `, ` · `, ` + `), never inside a shape."""
    pieces = re.split(r"(?<=\S)(?= (?:→|·|\+|/|⊙|×) )", op)
    lines, line = [], ""
    for piece in pieces:
        if line and cell_len(line + piece) > width:
            lines.append(line)
            line = "  " + piece.lstrip()
        else:
            line += piece
    lines.append(line)
    return Text("\n".join(lines))


class TensorDetail(Widget):
    """Set with `show(summary, note, routing=...)`; `note` is a dim last line (e.g. where a tensor
    was exported); `routing` the MoE routing of the selected MLP name's layer."""

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.summary: TensorSummary | None = None
        self.routing: MlpRouting | None = None
        self.note = ""
        self.empty = "no trace"

    def show(self, summary: TensorSummary | None, note: str = "", empty: str = "",
             routing: MlpRouting | None = None) -> None:
        self.summary, self.note, self.routing = summary, note, routing
        self.empty = empty or self.empty
        self.refresh()

    def render(self) -> RenderableType:
        if self.summary is None:
            return Text(self.empty, style="dim")
        info, op, s = self.summary.info, self.summary.op, self.summary.stats
        stats = Text.assemble(
            *(f"{label} {format_number(v, 10).strip()}  " for label, v in
              (("min", s.min), ("max", s.max), ("mean", s.mean), ("std", s.std), ("‖x‖", s.norm))))
        if s.nonfinite:
            stats.append(f"NaN {s.n_nan}  inf {s.n_inf}", style="bold red")
        lines: list[RenderableType] = [
            Text.assemble((info.name, "bold"), f"  {list(info.shape)} {info.dtype}", no_wrap=True, overflow="ellipsis"),
            wrap_op(op, max(self.size.width - 2, 20)),  # the operation uses the width it has, never cut
            stats,  # wraps on a narrow pane rather than losing values
        ]
        routing_tensor = info.name.endswith((ROUTER, EXPERT_IDS))
        if self.routing is None or not routing_tensor:
            lines.append(Histogram(s.hist, s.min, s.max))
        if self.routing is not None:
            budget = max(1, self.size.height - len(lines) - (1 if self.note else 0))
            lines += routing_lines(self.routing, budget, per_position=routing_tensor)
        if self.note:
            lines.append(Text(self.note, style="dim", no_wrap=True, overflow="ellipsis"))
        return Group(*lines)
