"""Layers list: one row per layer of the current step with a small summary.

Columns: layer, residual-stream norm after the block (last position), mean attention entropy
over heads (last query row, nats), the logit-lens top token with its probability, and on
mixture-of-experts models the experts the router chose for the last position. The selected
layer is highlighted; only the rows that fit are rendered.

Keys (screen level): `j`/`↓` next layer, `k`/`↑` previous layer.
"""

from __future__ import annotations

from rich.text import Text

from stepscope.tui.views.layers import head_stats, layer_rows, resid_norm
from stepscope.tui.views.logit_lens import logit_lens
from stepscope.tui.views.mlp import compact_choices
from stepscope.tui.widgets.common import fmt_num, fmt_prob, token_display
from stepscope.tui.widgets.pane import Pane


def window(selected: int, total: int, height: int) -> tuple[int, int]:
    """[start, end) of `height` rows containing `selected`, centred where possible."""
    height = max(height, 1)
    if total <= height:
        return 0, total
    start = min(max(selected - height // 2, 0), total - height)
    return start, start + height


class LayersList(Pane):
    """One row per layer at the cursor's step; a click selects the layer."""

    COMPONENT_CLASSES = {"layers-list--selected", "layers-list--header", "layers-list--dim"}
    LEGEND = ("‖resid‖: norm of blocks.L.hook_resid_post at the last position · H(attn): mean attention "
              "entropy over the heads, last query row (nats); `no attn`: the layer has no attention map "
              "(the Attention pane says why) · lens: logit-lens top-1 token and its p")

    def on_mount(self) -> None:
        self.tooltip = self.LEGEND
    WATCHES = frozenset({"step", "layer"})

    def __init__(self, trace=None, **kwargs) -> None:
        super().__init__(trace, **kwargs)
        self._first_row = 0

    def render(self) -> Text:
        trace = self._trace
        if trace is None or not len(trace.steps):
            return Text("layers", style="dim")
        index = self.step_index
        n_layers = int(trace.model.get("n_layers") or 0)
        style = self.get_component_rich_style
        out = Text(no_wrap=True, overflow="ellipsis", end="")
        moe = bool(trace.model.get("n_experts"))
        header = " L  ‖resid‖  H(attn) " + ("experts " if moe else "")
        header += ("lens top-1, p" if len(header) + 13 <= self.size.width else "lens") + "\n"
        out.append(header, style=style("layers-list--header"))
        start, end = window(self.cursor.layer, n_layers, self.size.height - 1)
        self._first_row = start
        for row in layer_rows(trace, index, range(start, end)):  # only the rows that show are computed
            layer = row.layer
            line = Text(no_wrap=True, overflow="ellipsis", end="")
            attn = "no attn" if row.attn_entropy is None and row.no_attention else fmt_num(row.attn_entropy, 2)
            line.append(f"{layer:>2} {fmt_num(row.resid_norm, 1):>8} {attn:>7} ")
            if moe:
                line.append(f"{compact_choices(row.experts) or '—':<7} ")
            top = row.lens
            if top is not None:  # token, a gap, p; on a narrow sidebar p goes first, then the token is cut
                room = self.size.width - line.cell_len
                token = token_display(top.text, top.special)
                prob = f" {fmt_prob(top.prob)}"
                if token.cell_len + len(prob) > room:
                    prob = ""
                    token.truncate(max(room, 1), overflow="ellipsis")
                line.append_text(token)
                line.append(prob, style=style("layers-list--dim"))
            if layer == self.cursor.layer:
                line.truncate(self.size.width, pad=True)
                line.stylize(style("layers-list--selected"))
            out.append_text(line)
            if layer != end - 1:
                out.append("\n")
        return out

    def prefetch(self, step_index: int) -> None:
        """Compute (into the views cache) what the rows would show at `step_index`."""
        trace = self._trace
        if trace is None or not 0 <= step_index < len(trace.steps):
            return
        n_layers = int(trace.model.get("n_layers") or 0)
        start, end = window(self.cursor.layer, n_layers, self.size.height - 1)
        logit_lens(trace, step_index)
        for layer in range(start, end):
            head_stats(trace, step_index, layer)
            resid_norm(trace, step_index, layer)

    def on_click(self, event) -> None:
        offset = event.get_content_offset(self)  # None on the border
        if offset is None or offset.y < 1 or self._trace is None:  # row 0 is the column header
            return
        row = self._first_row + offset.y - 1
        if row < int(self._trace.model.get("n_layers") or 0):
            self.move(layer=row)
