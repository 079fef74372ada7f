"""Browse one tensor by slices: fix the leading indices, scroll the numbers of the 2-D rest."""

from __future__ import annotations

from rich.table import Table
from rich.text import Text
from rich.console import Group
from textual.binding import Binding
from textual.message import Message
from textual.widget import Widget

from tui.views.tensors import axis_names, browse_slice, clamp_lead, n_leading, slice_rows

NUM = 10


class TensorBrowser(Widget, can_focus=True):
    """The numbers of one slice of a tensor.

    | Key(s) | Description |
    | :- | :- |
    | `[` `]` | Previous / next index on the selected leading axis. |
    | `,` `.` | Select the previous / next leading axis. |
    | `↑` `↓` `←` `→`, `PgUp` `PgDn` | Scroll the numbers. |
    | `Esc` | Back to the tensor list. |
    """

    BINDINGS = [
        Binding("left_square_bracket", "index(-1)", "Index-", show=False),
        Binding("right_square_bracket", "index(1)", "Index+", show=False),
        Binding("comma", "axis(-1)", "Axis-", show=False),
        Binding("full_stop", "axis(1)", "Axis+", show=False),
        Binding("up", "scroll_rows(-1)", "Up", show=False),
        Binding("down", "scroll_rows(1)", "Down", show=False),
        Binding("pageup", "scroll_rows(-10)", "Page up", show=False),
        Binding("pagedown", "scroll_rows(10)", "Page down", show=False),
        Binding("left", "scroll_cols(-1)", "Left", show=False),
        Binding("right", "scroll_cols(1)", "Right", show=False),
        Binding("escape", "close", "Back"),
    ]

    class Closed(Message):
        """Esc: the browser wants to give way to the list."""

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.source = None  # the tracer Step shown
        self.tensor: str | None = None  # the recorded name shown
        self.lead: tuple[int, ...] = ()
        self.axis = 0  # which leading axis `[`/`]` change
        self.row0 = 0
        self.col0 = 0

    def open(self, step, name: str, lead: tuple[int, ...] = ()) -> None:
        """Show `name` of a `tracer.Step` at the given leading indices."""
        self.source, self.tensor = step, name
        self.lead = clamp_lead(step.shape(name), lead)
        self.axis, self.row0, self.col0 = 0, 0, 0
        self.refresh()

    @property
    def shape(self) -> tuple[int, ...]:
        return self.source.shape(self.tensor) if self.source is not None and self.tensor else ()

    def current_slice(self):
        return browse_slice(self.source[self.tensor], self.lead)

    # -- actions --------------------------------------------------------------------------------
    def action_index(self, delta: int) -> None:
        if not self.lead:
            return
        lead = list(self.lead)
        lead[self.axis] += delta
        self.lead = clamp_lead(self.shape, tuple(lead))
        self.refresh()

    def action_axis(self, delta: int) -> None:
        if self.lead:
            self.axis = (self.axis + delta) % len(self.lead)
            self.refresh()

    def _extent(self) -> tuple[int, int]:
        sl_shape = self.shape[n_leading(self.shape):] or (1,)
        return (1, sl_shape[0]) if len(sl_shape) == 1 else (sl_shape[0], sl_shape[1])

    def action_scroll_rows(self, delta: int) -> None:
        rows, _ = self._extent()
        self.row0 = min(max(0, self.row0 + delta), max(0, rows - 1))
        self.refresh()

    def action_scroll_cols(self, delta: int) -> None:
        _, cols = self._extent()
        self.col0 = min(max(0, self.col0 + delta), max(0, cols - 1))
        self.refresh()

    def action_close(self) -> None:
        self.post_message(self.Closed())

    # -- drawing --------------------------------------------------------------------------------
    def _title(self) -> Text:
        shape = self.shape
        names = axis_names(self.tensor, len(shape))
        k = n_leading(shape)
        index = [str(i) for i in self.lead] + [":"] * (len(shape) - k)
        title = Text.assemble((self.tensor, "bold"), f" {list(shape)} · slice [{', '.join(index)}]")
        if k:
            a = self.axis
            title.append(f" · [ ] change {names[a]} ({self.lead[a]} of {shape[a]}), , . another axis", style="dim")
        if names and names[-1] == "S":  # keys: a sliding layer's cache holds only the window
            first = self.source.positions[1] - shape[-1]
            if first > 0:
                title.append(f" · key column j = position {first} + j", style="dim")
        return title

    def render(self):
        if self.source is None or not self.tensor:
            return Text("no tensor selected", style="dim")
        sl = self.current_slice()  # [R, C] or [C]
        rows_total, cols_total = self._extent()
        visible_rows = max(1, self.size.height - 3)
        visible_cols = max(1, (self.size.width - 7) // (NUM + 1))
        cells = slice_rows(sl, self.row0, visible_rows, self.col0, visible_cols, NUM)
        table = Table(box=None, pad_edge=False, padding=(0, 1, 0, 0), show_edge=False)
        table.add_column("", style="dim", justify="right", no_wrap=True)
        for c in range(self.col0, self.col0 + len(cells[0]) if cells else self.col0):
            table.add_column(str(c), justify="right", no_wrap=True, header_style="dim")
        for r, row in enumerate(cells):
            table.add_row(str(self.row0 + r if sl.ndim > 1 else 0), *row)
        where = Text(f"rows {self.row0}–{self.row0 + len(cells) - 1} of {rows_total} · "
                     f"cols {self.col0}–{self.col0 + (len(cells[0]) if cells else 0) - 1} of {cols_total}",
                     style="dim")
        return Group(self._title(), where, table)
