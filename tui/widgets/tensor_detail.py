"""The tensor inspector's detail panel: shape, dtype, operation, statistics and histogram of the
selected tensor. A plain render (fixed height in panes.tcss), so an update never re-lays-out."""

from __future__ import annotations

from rich.console import Group, RenderableType
from rich.text import Text
from textual.widget import Widget

from tui.render.spark import Histogram
from tui.views.tensors import TensorSummary, format_number


class TensorDetail(Widget):
    """Set with `show(summary, note)`; `note` is a dim last line (e.g. where a tensor was exported)."""

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.summary: TensorSummary | None = None
        self.note = ""
        self.empty = "no trace"

    def show(self, summary: TensorSummary | None, note: str = "", empty: str = "") -> None:
        self.summary, self.note = summary, note
        self.empty = empty or self.empty
        self.refresh()

    def render(self) -> RenderableType:
        if self.summary is None:
            return Text(self.empty, style="dim")
        info, op, s = self.summary.info, self.summary.op, self.summary.stats
        stats = Text.assemble(
            *(f"{label} {format_number(v, 10).strip()}  " for label, v in
              (("min", s.min), ("max", s.max), ("mean", s.mean), ("std", s.std), ("‖x‖", s.norm))), no_wrap=True)
        if s.nonfinite:
            stats.append(f"NaN {s.n_nan}  inf {s.n_inf}", style="bold red")
        lines: list[RenderableType] = [
            Text.assemble((info.name, "bold"), f"  {list(info.shape)} {info.dtype}", no_wrap=True),
            Text(op, no_wrap=True, overflow="ellipsis"),
            stats,
            Histogram(s.hist, s.min, s.max),
        ]
        if self.note:
            lines.append(Text(self.note, style="dim", no_wrap=True, overflow="ellipsis"))
        return Group(*lines)
