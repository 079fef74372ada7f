"""Heads list: the selected layer's query heads for the current step.

Columns: head, the KV head it shares (GQA/MQA: query head h reads KV head h // (n_heads /
n_kv_heads)), the entropy of its last attention row (nats) and the key token it attends most.

Keys (screen level): `h` previous head, `l` next head.
"""

from __future__ import annotations

import textwrap

from rich.text import Text

from stepscope.tui.views.heatmap import no_attention
from stepscope.tui.views.layers import head_rows
from stepscope.tui.views.vocab import tok_text
from stepscope.tui.widgets.common import fmt_num, token_display
from stepscope.tui.widgets.layers import window
from stepscope.tui.widgets.pane import Pane


def attention_kind(model: dict) -> str:
    n_heads = int(model.get("n_heads") or 1)
    n_kv = int(model.get("n_kv_heads") or n_heads)
    if n_kv == n_heads:
        return "MHA"
    if n_kv == 1:
        return "MQA"
    return f"GQA ×{n_heads // max(n_kv, 1)}"


class HeadsList(Pane):
    """The cursor layer's heads at the cursor's step; a click selects the head."""

    COMPONENT_CLASSES = {"heads-list--selected", "heads-list--header"}
    LEGEND = ("H: query head · kv: the KV head it reads · H(attn): entropy of its last query row (nats) · "
              "max→: the position:token it attends most")

    def on_mount(self) -> None:
        self.tooltip = self.LEGEND

    def __init__(self, trace=None, **kwargs) -> None:
        super().__init__(trace, **kwargs)
        self._first_row = 0

    def render(self) -> Text:
        trace = self._trace
        if trace is None or not len(trace.steps):
            return Text("heads", style="dim")
        model = trace.model
        reason = no_attention(model, self.cursor.layer)
        if reason is not None:  # a layer without attention (manifest facts): say why instead of dashes
            lines = textwrap.wrap(f"no attention heads at layer {self.cursor.layer}: {reason}", max(self.size.width, 10),
                                  break_on_hyphens=False)
            return Text("\n".join(lines), style="dim")
        rows = head_rows(trace, self.step_index, self.cursor.layer)
        tokens = trace.tokens
        style = self.get_component_rich_style
        out = Text(no_wrap=True, overflow="ellipsis", end="")
        out.append(f" H kv  H(attn) max→ ({attention_kind(model)})\n", style=style("heads-list--header"))
        start, end = window(self.cursor.head, len(rows), self.size.height - 1)
        self._first_row = start
        for row in rows[start:end]:
            line = Text(no_wrap=True, overflow="ellipsis", end="")
            line.append(f"{row.head:>2} {row.kv_head:>2} {fmt_num(row.entropy, 2):>8} ")
            if row.max_position is not None:
                line.append(f"{row.max_position}:")
                if row.max_position < len(tokens):
                    tok = tokens[row.max_position]
                    line.append_text(token_display(tok_text(tok), bool(tok.get("special"))))
            if row.head == self.cursor.head:
                line.truncate(self.size.width, pad=True)
                line.stylize(style("heads-list--selected"))
            out.append_text(line)
            if row.head != end - 1:
                out.append("\n")
        return out

    def prefetch(self, step_index: int) -> None:
        """Compute (into the views cache) what the rows would show at `step_index`."""
        trace = self._trace
        if trace is not None and 0 <= step_index < len(trace.steps):
            head_rows(trace, step_index, self.cursor.layer)

    def on_click(self, event) -> None:
        offset = event.get_content_offset(self)  # None on the border
        if offset is None or offset.y < 1 or self._trace is None:  # row 0 is the column header
            return
        row = self._first_row + offset.y - 1
        if row < int(self._trace.model.get("n_heads") or 0):
            self.move(head=row)
