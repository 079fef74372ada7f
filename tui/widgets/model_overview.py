"""Model overview pane: architecture facts and parameter counts per component."""

from __future__ import annotations

from rich.console import Group
from rich.table import Table
from rich.text import Text

from tui.render.probbar import ProbBar
from tui.views.model_overview import human_count, model_overview
from tui.widgets.scroll_pane import ScrollPane


class ModelOverviewPane(ScrollPane):
    """The trace's model: facts (family, sizes, attention kind, norms, dtype) and parameters."""

    DEPENDS = frozenset()

    def content(self):
        ov = model_overview(self._trace)
        facts = Table(box=None, pad_edge=False, show_header=False, show_edge=False, padding=(0, 2, 0, 0))
        facts.add_column(style="dim", no_wrap=True)
        facts.add_column()
        for label, value in ov.facts:
            facts.add_row(label, Text(value))
        params = Table(box=None, pad_edge=False, show_edge=False, padding=(0, 2, 0, 0))
        for title, justify in (("component", "left"), ("parameters", "right"), ("share", "right"), ("", "left")):
            params.add_column(title, justify=justify, no_wrap=True, header_style="bold dim")
        for row in ov.params:
            params.add_row(Text(row.component), f"{row.count:,} ({human_count(row.count)})", f"{row.share:.1%}",
                           ProbBar(row.share, 20, end=""))
        params.add_row(Text("total", style="bold"), Text(f"{ov.total:,} ({human_count(ov.total)})", style="bold"),
                       "", "")
        parts = [Text("model", style="bold"), facts, Text(""), Text("parameters", style="bold"), params]
        if ov.data_flow:
            parts += [Text(""), Text("data flow of a block", style="bold")]
            parts += [Text(f"  {line}") for line in ov.data_flow]
        return Group(*parts)
