"""Model overview pane: architecture facts and parameter counts per component."""

from __future__ import annotations

from rich.text import Text

from tui.render.columns import columns
from tui.render.probbar import bar_chars
from tui.views.model_overview import human_count, model_overview
from tui.widgets.lines_pane import LinesPane

BAR = 20


class ModelOverviewPane(LinesPane):
    """The trace's model: facts (family, sizes, attention kind, norms, dtype), parameters per
    component with their share, and the data flow of a block when the manifest describes it."""

    DEPENDS = frozenset()

    def lines(self) -> list[Text]:
        ov = model_overview(self._trace)
        facts = columns(["fact", "value"], [[label, Text(value)] for label, value in ov.facts], justify="ll")[1:]
        for line in facts:
            line.stylize("dim", 0, max(len(label) for label, _ in ov.facts))
        rows = [[Text(r.component), f"{r.count:,} ({human_count(r.count)})", f"{r.share:.1%}",
                 Text(bar_chars(r.share, BAR), style="green")] for r in ov.params]
        total = Text(f"{ov.total:,} ({human_count(ov.total)})", style="bold")
        rows.append([Text("total", style="bold"), total, "", ""])
        out = [Text("model", style="bold"), *facts, Text(""), Text("parameters", style="bold"),
               *columns(["component", "parameters", "share", ""], rows, justify="lrrl")]
        if ov.data_flow:
            out += [Text(""), Text("data flow of a block", style="bold")]
            out += [Text(f"  {line}", no_wrap=True) for line in ov.data_flow]
        return out
