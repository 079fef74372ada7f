"""Logit lens pane: the step's top tokens at every layer, and where the chosen token appears."""

from __future__ import annotations

from rich.console import Group
from rich.table import Table
from rich.text import Text

from tui.text import display_token
from tui.views.logit_lens import LensToken, logit_lens
from tui.widgets.scroll_pane import ScrollPane

MAX_OTHERS = 4


class LogitLensPane(ScrollPane):
    """One row per layer: top-1 token and probability, the chosen token's rank, the next tokens.
    The selected layer is highlighted; the first layer where the chosen token is top-1 is marked."""

    DEPENDS = frozenset({"step", "layer"})
    COMPONENT_CLASSES = {"logit-lens--selected", "logit-lens--answer"}

    def _token(self, tok: LensToken, chosen_id: int) -> Text:
        text = display_token(tok.text, tok.special)
        if tok.id == chosen_id:
            text.stylize(self.get_component_rich_style("logit-lens--answer"))
        return text

    def content(self):
        lens = logit_lens(self._trace, self.step)
        if lens is None:
            return Text(f"logit lens: not recorded at step {self.step}", style="dim")
        where = (f"first top-1 at layer {lens.first_top1_layer}" if lens.first_top1_layer is not None
                 else "never top-1 in the lens")
        header = Text.assemble(f"step {lens.step} chose ", display_token(lens.chosen_text, lens.chosen_special),
                               f" (id {lens.chosen_id}) · {where}")
        table = Table(box=None, pad_edge=False, expand=False, show_edge=False, padding=(0, 1, 0, 0))
        for title, justify in (("L", "right"), ("top-1", "left"), ("p", "right"), ("rank", "right"),
                               ("p(chosen)", "right"), ("next", "left")):
            table.add_column(title, justify=justify, no_wrap=True, header_style="bold dim")
        for row in lens.rows:
            others = Text(" ").join(self._token(t, lens.chosen_id) for t in row.top[1 : 1 + MAX_OTHERS])
            rank = "—" if row.chosen_rank is None else str(row.chosen_rank + 1)
            p_chosen = "—" if row.chosen_prob is None else f"{row.chosen_prob:.3f}"
            marker = "◀ first" if row.first_top1 else ""
            style = self.get_component_rich_style("logit-lens--selected") if row.layer == self.layer else None
            table.add_row(str(row.layer), self._token(row.top1, lens.chosen_id), f"{row.top1.prob:.3f}", rank,
                          p_chosen, Text.assemble(others, (f" {marker}" if marker else "", "bold")), style=style)
        return Group(header, table)
