"""Model overview pane: architecture facts, parameter counts per component, and the family's real
data flow (its block equations, local/global layers, experts, names it has or lacks)."""

from __future__ import annotations

from rich.text import Text

from stepscope.tui.render.columns import Cell, columns
from stepscope.tui.render.probbar import bar_chars
from stepscope.tui.views.model_overview import ModelOverview, human_count, model_overview
from stepscope.tui.widgets.lines_pane import LinesPane

BAR = 20
NAMES_PER_LINE = 4


def name_lines(names: list[str], style: str = "") -> list[Text]:
    """A list of recorded names, a few per line, indented."""
    return [Text("  " + ", ".join(names[i : i + NAMES_PER_LINE]), style=style, no_wrap=True)
            for i in range(0, len(names), NAMES_PER_LINE)]


def family_lines(ov: ModelOverview) -> list[Text]:
    """Data flow, layer kinds, notes and the names the family has, lacks or could not record."""
    out: list[Text] = []
    if ov.data_flow:
        out += [Text(""), Text("data flow of a block", style="bold")]
        out += [Text(f"  {line}", no_wrap=True) for line in ov.data_flow]
    if ov.layer_kinds:
        out += [Text(""), Text("layers", style="bold")]
        out += [Text.assemble(f"  {kind}: ", (layers, "bold"), no_wrap=True) for kind, layers in ov.layer_kinds]
    if ov.notes:
        out += [Text(""), Text("family specifics", style="bold")]
        out += [Text(f"  {note}", no_wrap=True) for note in ov.notes]
    if ov.missing:
        why = "generic fallback: no adapter for this architecture" if ov.generic else "the adapter could not find them"
        out += [Text(""), Text(f"not recorded ({len(ov.missing)} names; {why})", style="bold yellow")]
        out += name_lines(ov.missing, "yellow")
    if ov.not_applicable:
        out += [Text(""), Text("not applicable (this family has no such tensor)", style="bold")]
        out += name_lines(ov.not_applicable, "dim")
    if ov.extras:
        out += [Text(""), Text("family extras recorded", style="bold")]
        out += name_lines(ov.extras)
    return out


class ModelOverviewPane(LinesPane):
    """The trace's model: facts (family, sizes, attention kind, norms, dtype), parameters per
    component with their share, then the family's data flow, local/global layers, experts, and
    which names are not applicable, family extras, or not recorded (generic fallback)."""

    WATCHES: frozenset[str] = frozenset()

    def lines(self) -> list[Text]:
        ov = model_overview(self._trace)
        label_width = max((len(label) for label, _ in ov.facts), default=0) + 2
        room = max(self.scrollable_content_region.width - label_width, 16)
        fact_rows: list[list[Cell]] = []
        for label, value in ov.facts:  # a long value continues on the next line, broken after a comma
            for i, chunk in enumerate(_chunks(value, room)):
                fact_rows.append([label if i == 0 else "", Text(chunk)])
        facts = columns(["fact", "value"], fact_rows, justify="ll")[1:]
        for line in facts:
            line.stylize("dim", 0, max(len(label) for label, _ in ov.facts))
        rows: list[list[Cell]] = [[Text(r.component), f"{r.count:,} ({human_count(r.count)})", f"{r.share:.1%}",
                 Text(bar_chars(r.share, BAR), style="green")] for r in ov.params]
        total = Text(f"{ov.total:,} ({human_count(ov.total)})", style="bold")
        rows.append([Text("total", style="bold"), total, "", ""])
        warning = ([Text(f"generic fallback: {len(ov.missing)} names not recorded (listed below)", style="bold yellow")]
                   if ov.missing else [])
        out = [Text("model", style="bold"), *warning, *facts, Text(""), Text("parameters (share: of the total)", style="bold"),
               *columns(["component", "parameters", "share", ""], rows, justify="lrrl")]
        return out + family_lines(ov)


def _chunks(value: str, width: int) -> list[str]:
    """`value` in pieces of at most `width` cells, broken after ", " where it can be."""
    if len(value) <= width:
        return [value]
    pieces, line = [], ""
    for part in value.split(", "):
        candidate = f"{line}, {part}" if line else part
        if line and len(candidate) > width:
            pieces.append(line + ",")
            line = part
        else:
            line = candidate
    return pieces + [line]
