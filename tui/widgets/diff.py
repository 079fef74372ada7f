"""Diff view: the cursor's trace (A) against a second trace of the same model (B)."""

from __future__ import annotations

from rich.text import Text

from tui.views.diff import diff_lines
from tui.widgets.lines_pane import LinesPane


class DiffPane(LinesPane):
    """Alignment, first differences, residual divergence per layer at the step, and the selected
    layer's resid_post side by side (b − a)."""

    WATCHES = frozenset({"step", "layer"})

    def __init__(self, trace=None, other=None, **kwargs) -> None:
        super().__init__(trace, **kwargs)
        self.other = other  # trace B

    def lines(self) -> list[Text]:
        if self.trace is None or self.other is None:
            return [Text("no second trace (stepscope diff A B)", style="dim")]
        return diff_lines(self.trace, self.other, self.step_index, self.cursor.layer)
