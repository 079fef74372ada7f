"""Attribution pane: why the step chose its token and not a rival (direct logit attribution)."""

from __future__ import annotations

from typing import cast

from rich.text import Text
from textual.binding import Binding
from textual.geometry import Region
from textual.message import Message
from textual.worker import Worker, WorkerState

from stepscope.tui.render.attribution import attribution_lines, selected_row
from stepscope.tui.views.attribution import install_lens, lens_ready, lens_source, read_lens, rivals, top_head
from stepscope.tui.widgets.lines_pane import LinesPane


class AttributionPane(LinesPane):
    """Layers × {attention, MLP} signed bars, the selected layer's heads, top contributors in words.
    The unembedding (W_U) is read once per trace in a thread worker; the pane says so meanwhile."""

    WATCHES = frozenset({"step", "layer", "head"})
    BINDINGS = [
        *LinesPane.BINDINGS,
        Binding("o", "rival(1)", "Next rival", tooltip="Compare the chosen token with the next candidate"),
        Binding("O", "rival(-1)", "Previous rival", show=False, tooltip="Compare with the previous candidate"),
        Binding("s", "sort", "Sort layers", tooltip="Layers in order, or by the size of their parts"),
        Binding("h", "top_head", "Top head", tooltip="Select the selected layer's largest head"),
        Binding("enter", "open_head", "Pattern", tooltip="Show the selected head's attention pattern (Attention pane)"),
    ]

    class OpenHeatmap(Message):
        """Show the Attention pane at (layer, head)."""

        def __init__(self, layer: int, head: int) -> None:
            super().__init__()
            self.layer, self.head = layer, head

    def __init__(self, trace=None, **kwargs) -> None:
        super().__init__(trace, **kwargs)
        self.rival = 0  # index into the step's candidates (0: the runner-up)
        self.picked: int | None = None  # a token picked elsewhere (a click in the Candidates pane), this step only
        self.by_size = False
        self._loading = None  # the trace whose lens a worker is reading
        self._failed: tuple[object, str] | None = None  # (trace, why its lens could not be read)

    def on_trace(self) -> None:
        self.rival, self.picked = 0, None

    def on_cursor(self, old, new) -> None:
        if new.step != old.step:
            self.rival, self.picked = 0, None
        super().on_cursor(old, new)
        if new.layer != old.layer:
            self.call_after_refresh(reveal_selected, self)

    def other(self) -> int | None:
        """The rival token id (None: the runner-up)."""
        if self.picked is not None:
            return self.picked
        if not self.rival:
            return None
        options = rivals(self.trace, self.step_index)
        return options[self.rival % len(options)] if options else None

    def lines(self) -> list[Text]:
        if self.trace is None or not len(self.trace.steps):
            return [Text("no step yet", style="dim")]
        if self._failed is not None and self._failed[0] is self.trace:
            return [Text(f"attribution unavailable: {self._failed[1]}", style="yellow")]
        if not lens_ready(self.trace):
            self._load_lens()
            return [Text("reading the unembedding (W_U) for the attribution…", style="dim")]
        return attribution_lines(self.trace, self.step_index, self.cursor.layer, self.other(), self.by_size,
                                 head=self.cursor.head, width=max(self.scrollable_content_region.width, 20))

    # -- the first computation, off the UI thread -------------------------------------------------
    def _load_lens(self) -> None:
        trace = self.trace
        if self._loading is trace:
            return
        self._loading = trace
        source = lens_source(trace)
        self.run_worker(lambda: (trace, read_lens(source)), thread=True, exclusive=True,
                        group="attribution-lens", name="attribution-lens", exit_on_error=False)

    def on_worker_state_changed(self, event: Worker.StateChanged) -> None:
        if event.worker.name != "attribution-lens":
            return
        event.stop()
        if event.state == WorkerState.SUCCESS:
            trace, arrays = cast(tuple, event.worker.result)  # (the worker only carried the reference)
            install_lens(trace, arrays)
        elif event.state == WorkerState.ERROR:
            self._failed = (self._loading, str(event.worker.error))
        else:
            return
        self._loading = None
        self.invalidate()

    # -- keys and clicks ---------------------------------------------------------------------------
    def pick(self, token_id: int | None) -> None:
        """Explain the chosen token against `token_id` (None: back to the runner-up)."""
        self.picked = token_id
        self.invalidate()

    def action_rival(self, delta: int) -> None:
        self.rival, self.picked = max(0, self.rival + delta), None
        self.invalidate()

    def action_pick_rival(self, index: int) -> None:
        self.rival, self.picked = index, None
        self.invalidate()

    def action_sort(self) -> None:
        self.by_size = not self.by_size
        self.invalidate()

    def action_select_layer(self, layer: int) -> None:
        self.move(layer=layer)

    def action_top_head(self) -> None:
        head = top_head(self.trace, self.step_index, self.cursor.layer, self.other())
        if head is not None:
            self.move(head=head)

    def action_open_head(self, head: int | None = None) -> None:
        head = self.cursor.head if head is None else head
        self.move(head=head)
        self.post_message(self.OpenHeatmap(self.cursor.layer, head))


def reveal_selected(pane: LinesPane, below: int | None = None) -> None:
    """Scroll a lines pane so the selected layer's row (▶) and what follows it (its heads) are visible."""
    if not pane.is_mounted:
        return
    lines = pane.drawn_lines
    row = selected_row(lines)
    if row is None:
        return
    span = below if below is not None else next(
        (k for k in range(1, len(lines) - row) if lines[row + k].plain[1:5].strip().isdigit()), len(lines) - row)
    pane.scroll_to_region(Region(0, row, 1, min(span, max(pane.size.height, 1))), animate=False, immediate=True)
