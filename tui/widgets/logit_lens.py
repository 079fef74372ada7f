"""Logit lens pane: the step's top tokens at every layer, and where the chosen token appears."""

from __future__ import annotations

from rich.text import Text

from stepscope.tui.render.columns import Cell, columns
from stepscope.tui.text import display_token
from stepscope.tui.views.logit_lens import LensToken, logit_lens
from stepscope.tui.widgets.lines_pane import LinesPane

MAX_OTHERS = 4
TOKEN_WIDTH = 16
LEGEND = ("per layer L: unembed(ln_final(resid_post))", "at the last position", "p: top-1 probability",
          "rank: the chosen token's rank (1 = top)", "p(chosen): its probability")
EXACT = "both exact over the whole vocabulary (stored W_U)"
TOP_K = "both within the recorded top {k} (—: not in it; no W_U stored)"


class LogitLensPane(LinesPane):
    """One row per layer: top-1 token and probability, the chosen token's rank and probability,
    the next tokens. The selected layer is highlighted; the first layer where the chosen token is
    top-1 is marked `◀ first`."""

    WATCHES = frozenset({"step", "layer"})
    COMPONENT_CLASSES = {"logit-lens--selected", "logit-lens--answer"}

    def _token(self, tok: LensToken, chosen_id: int) -> Text:
        text = display_token(tok.text, tok.special)
        text.truncate(TOKEN_WIDTH, overflow="ellipsis")
        if tok.id == chosen_id:
            text.stylize(self.get_component_rich_style("logit-lens--answer"))
        return text

    def lines(self) -> list[Text]:
        lens = logit_lens(self._trace, self.step_index)
        if lens is None:
            return [Text(f"logit lens: not recorded at step {self.step_index}", style="dim")]
        where = (f"first top-1 at layer {lens.first_top1_layer}" if lens.first_top1_layer is not None
                 else "never top-1 in the lens")
        header = Text.assemble(f"step {lens.step} chose ", display_token(lens.chosen_text, lens.chosen_special),
                               f" (id {lens.chosen_id})", no_wrap=True)
        if header.cell_len + 3 + len(where) <= self.scrollable_content_region.width:
            header.append(f" · {where}")
            heading = [header]
        else:  # on two lines rather than cut
            heading = [header, Text(where, no_wrap=True)]
        rows: list[list[Cell]] = []
        for row in lens.rows:
            others = Text(" ").join(self._token(t, lens.chosen_id) for t in row.top[1 : 1 + MAX_OTHERS])
            if row.first_top1:
                others.append("  ◀ first", style="bold")
            rows.append([
                str(row.layer), self._token(row.top1, lens.chosen_id), f"{row.top1.prob:.3f}",
                "—" if row.chosen_rank is None else str(row.chosen_rank),
                "—" if row.chosen_prob is None else f"{row.chosen_prob:.3f}", others,
            ])
        table = columns(["L", "top-1", "p", "rank", "p(chosen)", f"next {MAX_OTHERS}"], rows, justify="rlrrrl")
        legend = self.wrap_parts([*LEGEND, EXACT if lens.exact else TOP_K.format(k=lens.k)], style="dim")
        selected = self.get_component_rich_style("logit-lens--selected")
        for row, line in zip(lens.rows, table[1:]):  # table[0] is the column header
            if row.layer == self.cursor.layer:
                line.stylize(selected)
        return [*heading, *legend, *table]
