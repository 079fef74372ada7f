"""Attribution pane: why the step chose its token and not a rival (direct logit attribution)."""

from __future__ import annotations

from rich.text import Text
from textual.binding import Binding

from tui.views.attribution import attribution_lines, rivals, top_head
from tui.widgets.lines_pane import LinesPane


class AttributionPane(LinesPane):
    """Layers × {attention, MLP} signed bars, the selected layer's heads, top contributors in words."""

    WATCHES = frozenset({"step", "layer"})
    BINDINGS = [
        *LinesPane.BINDINGS,
        Binding("o", "rival(1)", "Next rival", tooltip="Compare the chosen token with the next candidate"),
        Binding("O", "rival(-1)", "Previous rival", show=False),
        Binding("s", "sort", "Sort layers", tooltip="Layers in order, or by the size of their parts"),
        Binding("h", "top_head", "Top head", tooltip="Select the selected layer's largest head (its pattern in the heatmap)"),
    ]

    def __init__(self, trace=None, **kwargs) -> None:
        super().__init__(trace, **kwargs)
        self.rival = 0  # index into the step's candidates (0: the runner-up)
        self.by_size = False

    def on_trace(self) -> None:
        self.rival = 0

    def on_cursor(self, old, new) -> None:
        if new.step != old.step:
            self.rival = 0
        super().on_cursor(old, new)

    def other(self) -> int | None:
        """The rival token id (None: the runner-up)."""
        if not self.rival:
            return None
        options = rivals(self.trace, self.step_index)
        return options[self.rival % len(options)] if options else None

    def lines(self) -> list[Text]:
        if self.trace is None or not len(self.trace.steps):
            return [Text("no step yet", style="dim")]
        return attribution_lines(self.trace, self.step_index, self.cursor.layer, self.other(), self.by_size)

    def action_rival(self, delta: int) -> None:
        self.rival = max(0, self.rival + delta)
        self.invalidate()

    def action_sort(self) -> None:
        self.by_size = not self.by_size
        self.invalidate()

    def action_top_head(self) -> None:
        head = top_head(self.trace, self.step_index, self.cursor.layer, self.other())
        if head is not None:
            self.move(head=head)
