"""Browse one tensor as a 2-D slice over any two of its named axes; export the slice or the tensor."""

from __future__ import annotations

from rich.console import Group
from rich.table import Table
from rich.text import Text
from textual.binding import Binding
from textual.message import Message
from textual.widget import Widget

from stepscope.tracer import Step, Trace
from stepscope.tracer.geometry import sink_columns
from stepscope.tracer.inert import inert
from stepscope.tui.text import escape_for_display, fit
from stepscope.tui.views.tensors import (
    SliceView,
    axis_labels,
    axis_pairs,
    default_view,
    export_array,
    export_dir_for,
    export_filename,
    slice_filename,
    slice_label,
    slice_rows,
    view_slice,
    with_axes,
    with_index,
)
from stepscope.tui.views.vocab import tok_text, token_texts

NUM = 10


class TensorBrowser(Widget, can_focus=True):
    """The numbers of one slice of a tensor: two shown axes (rows × columns), the others held at an
    index. Per-head tensors open on the selected head; a vocab axis is labelled with token text.

    | Key(s) | Description |
    | :- | :- |
    | `[` `]` | Previous / next index on the held axis (head, position, …). |
    | `,` `.` | Show another pair of axes (e.g. position × d_head, head × d_head, position × head). |
    | `t` / `m` | Vocab axis: jump to the chosen token / to the row's largest value. |
    | `e` / `E` | Export the whole tensor / the current slice to `.npy` (`<trace>-exports`, or $STEPSCOPE_EXPORT_DIR). |
    | `↑` `↓` `←` `→`, `PgUp` `PgDn`, `shift+←→` | Scroll the numbers (shift: ten columns). |
    | `Esc` | Back to the tensor list. |
    """

    BINDINGS = [
        Binding("left_square_bracket", "index(-1)", "Index-", show=False),
        Binding("right_square_bracket", "index(1)", "Index+", show=False),
        Binding("comma", "axis(-1)", "Axes-", show=False),
        Binding("full_stop", "axis(1)", "Axes+", show=False),
        Binding("t", "jump_chosen", "Chosen token", show=False),
        Binding("m", "jump_max", "Row max", show=False),
        Binding("e", "export(False)", "Export tensor"),
        Binding("E", "export(True)", "Export slice"),
        Binding("up", "scroll_rows(-1)", "Up", show=False),
        Binding("down", "scroll_rows(1)", "Down", show=False),
        Binding("pageup", "scroll_rows(-10)", "Page up", show=False),
        Binding("pagedown", "scroll_rows(10)", "Page down", show=False),
        Binding("left", "scroll_cols(-1)", "Left", show=False),
        Binding("right", "scroll_cols(1)", "Right", show=False),
        Binding("shift+left", "scroll_cols(-10)", "Page left", show=False),
        Binding("shift+right", "scroll_cols(10)", "Page right", show=False),
        Binding("escape", "close", "Back"),
    ]

    class Closed(Message):
        """Esc: the browser wants to give way to the list."""

    class Exported(Message):
        """A tensor or slice was written to `path`."""

        def __init__(self, name: str, path: str) -> None:
            super().__init__()
            self.name, self.path = name, path

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.source: Step | None = None  # the tracer Step shown
        self.tensor: str | None = None  # the recorded name shown
        self.trace: Trace | None = None  # for token texts, the chosen token and the export directory
        self.export_dir: str | None = None  # None: beside the trace
        self.view: SliceView | None = None
        self.row0 = 0
        self.col0 = 0
        self.note: Text | None = None  # export feedback, cleared on leaving

    def open(self, step, name: str, lead: tuple[int, ...] = (), *, head: int | None = None,
             kv_head: int | None = None, trace=None) -> None:
        """Show `name` of a `tracer.Step`. The same tensor at another step keeps its view; a new one
        opens on the selected head (`head`/`kv_head`), else on its last two axes."""
        same = name == self.tensor and self.view is not None and step.shape(name) == self.shape
        self.source, self.tensor = step, name
        if trace is not None:
            self.trace = trace
        if not same:
            self.view = default_view(name, step.shape(name), head, kv_head)
            if lead and head is None:  # leading indices given the old way: hold the first axes there
                for axis, index in enumerate(lead):
                    if axis in self.view.fixed():
                        self.view = with_index(self.view, self.shape, axis, int(index) - self.view.index[axis])
            self.row0 = self.col0 = 0
        self.note = None
        self.refresh()

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.source.shape(self.tensor)) if self.source is not None and self.tensor else ()

    @property
    def lead(self) -> tuple[int, ...]:
        """Indices of the held axes, in axis order."""
        return tuple(self.view.index[a] for a in self.view.fixed()) if self.view is not None else ()

    @property
    def labels(self) -> list[str]:
        return axis_labels(self.tensor, len(self.shape)) if self.tensor else []

    @property
    def shown(self) -> SliceView:
        """The view of the open tensor (drawing and the slice actions run only with one open)."""
        assert self.view is not None
        return self.view

    def current_slice(self):
        """[R, C] numbers shown (rows axis × columns axis)."""
        return view_slice(self.source[self.tensor], self.view)

    def _extent(self) -> tuple[int, int]:
        shape = self.shape or (1,)
        rows = 1 if self.shown.rows is None else shape[self.shown.rows]
        return rows, shape[self.shown.cols]

    # -- actions --------------------------------------------------------------------------------
    def action_index(self, delta: int) -> None:
        held = self.view.fixed() if self.view is not None else []
        if held:
            self.view = with_index(self.shown, self.shape, held[0], delta)
            self.note = None
            self.refresh()

    def action_axis(self, delta: int) -> None:
        if self.view is None:
            return
        pairs = axis_pairs(len(self.shape))
        now = (self.view.rows, self.view.cols)
        i = pairs.index(now) if now in pairs else 0
        self.view = with_axes(self.view, pairs[(i + delta) % len(pairs)])
        self.row0 = self.col0 = 0
        self.note = None
        self.refresh()

    def _vocab_axis(self) -> bool:
        return self.view is not None and self.labels[self.view.cols] == "vocab"

    def action_jump_chosen(self) -> None:
        """Scroll the vocab axis so the token this step chose is the first column."""
        if self._vocab_axis() and self.source is not None:
            chosen = (self.source.token or {}).get("id")
            if isinstance(chosen, int):
                self.col0 = min(max(0, chosen), self._extent()[1] - 1)
                self.refresh()

    def action_jump_max(self) -> None:
        """Scroll so the largest value of the first visible row is the first column."""
        if self.view is None:
            return
        row = self.current_slice()[min(self.row0, self._extent()[0] - 1)]  # [C]
        self.col0 = int(row.argmax()) if row.size else 0
        self.refresh()

    def action_scroll_rows(self, delta: int) -> None:
        rows, _ = self._extent()
        self.row0 = min(max(0, self.row0 + delta), max(0, rows - 1))
        self.refresh()

    def action_scroll_cols(self, delta: int) -> None:
        _, cols = self._extent()
        self.col0 = min(max(0, self.col0 + delta), max(0, cols - 1))
        self.refresh()

    def action_export(self, only_slice: bool) -> None:
        """Write the tensor (or the slice) as `.npy`; the path shows under the title."""
        if self.source is None or not self.tensor:
            return
        directory = self.export_dir or export_dir_for(self.trace)
        try:
            if only_slice:
                name = slice_filename(self.source.index, self.tensor, self.shape, self.shown)
                path = export_array(self.current_slice(), directory, name)
            else:
                path = export_array(self.source[self.tensor], directory, export_filename(self.source.index, self.tensor))
        except (OSError, ValueError) as exc:
            self.note = Text(f"export failed: {inert(str(exc))}", style="bold red")
            self.refresh()
            return
        what = "slice" if only_slice else "tensor"
        self.note = Text.assemble((f"exported {what} → ", "bold green"), inert(path))
        self.refresh()
        self.post_message(self.Exported(self.tensor, path))

    def action_close(self) -> None:
        self.note = None
        self.post_message(self.Closed())

    # -- drawing --------------------------------------------------------------------------------
    def _title(self) -> Text:
        shape = self.shape
        assert self.tensor is not None  # drawn with a tensor open
        title = Text.assemble((inert(self.tensor), "bold"), f" {list(shape)} · {slice_label(self.tensor, shape, self.shown)}",
                              no_wrap=True, overflow="ellipsis")
        return title

    def _help(self) -> Text:
        labels, view = self.labels, self.shown
        parts = []
        held = view.fixed()
        if held:
            a = held[0]
            parts.append(f"[ ] {labels[a]} {view.index[a]} of {self.shape[a]}")
        if len(self.shape) >= 2:
            rows = labels[view.rows] if view.rows is not None else "–"
            parts.append(f", . axes: {rows} × {labels[view.cols]}")
        if self._vocab_axis():
            parts.append("t chosen token · m row max")
        parts.append("e tensor · E slice → .npy")
        text = Text(" · ".join(parts), style="dim", no_wrap=True, overflow="ellipsis")
        if labels and labels[-1] == "key" and view.cols == len(labels) - 1:  # a sliding layer's cache
            assert self.source is not None  # drawn with a tensor open
            first = self.source.positions[1] - self.shape[-1] + self._sink()
            if self._sink():
                text.append(" · last column = attention sink", style="dim")
            if first > 0:
                text.append(f" · key column j = position {first} + j", style="dim")
        return text

    def _col_header(self, c: int) -> str:
        if self._vocab_axis():
            text, _ = token_texts(self.trace)(c) if self.trace is not None else (str(c), False)
            return fit(f"{c} {escape_for_display(text)}", NUM)
        if self.labels[self.shown.cols] in ("position", "key") and self.trace is not None:
            return self._position_label(c)
        return str(c)

    def _sink(self) -> int:
        """1 when the model's attention maps end with a sink column (manifest fact), else 0."""
        return sink_columns(self.trace.model) if self.trace is not None and "key" in self.labels else 0

    def _stored_row(self, r: int) -> int:
        """The step-relative query row of stored row r (rows the budget omitted are not stored)."""
        rows = ((getattr(self.source, "omitted", None) or {}).get(self.tensor) or {}).get("rows")
        return r + (rows[1] - rows[0]) if rows and r >= rows[0] else r

    def _position_label(self, i: int) -> str:
        """`7 ·Paris` for a position axis (key axes offset on a sliding layer; `sink` for the sink column)."""
        labels = self.labels
        offset = 0
        if labels[self.shown.cols] == "key" and self.source is not None:
            n_keys = self.shape[self.shown.cols] - self._sink()
            if i >= n_keys:
                return fit("sink", NUM)
            offset = self.source.positions[1] - n_keys
        elif labels[self.shown.cols] == "position" and self.source is not None:
            offset = self.source.positions[0]
        pos = i + offset
        assert self.trace is not None  # position labels need the trace (the callers check)
        tokens = self.trace.tokens
        text = escape_for_display(tok_text(tokens[pos])) if 0 <= pos < len(tokens) else ""
        return fit(f"{pos} {text}", NUM)

    def _row_label(self, r: int) -> str:
        if self.shown.rows is None:
            return "0"
        label = self.labels[self.shown.rows]
        if label == "position" and self.trace is not None and self.source is not None:
            pos = self.source.positions[0] + self._stored_row(r)
            tokens = self.trace.tokens
            text = escape_for_display(tok_text(tokens[pos])) if 0 <= pos < len(tokens) else ""
            return fit(f"{pos} {text}", NUM)
        return str(r)

    def render(self):
        if self.source is None or not self.tensor or self.view is None:
            return Text("no tensor selected", style="dim")
        sl = self.current_slice()  # [R, C]
        rows_total, cols_total = self._extent()
        head_lines = 3 + (1 if self.note is not None else 0) + 1
        visible_rows = max(1, self.size.height - head_lines)
        visible_cols = max(1, (self.size.width - NUM - 1) // (NUM + 1))
        cells = slice_rows(sl, self.row0, visible_rows, self.col0, visible_cols, NUM)
        table = Table(box=None, pad_edge=False, padding=(0, 1, 0, 0), show_edge=False)
        table.add_column("", style="dim", justify="right", no_wrap=True)
        for c in range(self.col0, self.col0 + (len(cells[0]) if cells else 0)):
            table.add_column(self._col_header(c), justify="right", no_wrap=True, header_style="dim")
        for r, row in enumerate(cells):
            table.add_row(self._row_label(self.row0 + r), *row)
        labels = self.labels
        rows_name = labels[self.view.rows] if self.view.rows is not None else "row"
        n_cols = len(cells[0]) if cells else 0
        where = Text(f"{rows_name} {self.row0}–{self.row0 + len(cells) - 1} of {rows_total} · "
                     f"{labels[self.view.cols]} {self.col0}–{self.col0 + n_cols - 1} of {cols_total}",
                     style="dim", no_wrap=True, overflow="ellipsis")
        parts = [self._title(), self._help(), where]
        if self.note is not None:
            parts.append(self.note)
        return Group(*parts, table)
