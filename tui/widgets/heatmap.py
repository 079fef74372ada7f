"""Attention heatmap pane: the selected layer/head of the current step, a cell cursor and its readout."""

from __future__ import annotations

from rich.console import Group
from rich.text import Text
from textual import events
from textual.binding import Binding
from textual.reactive import reactive

from stepscope.tracer.trace_format import TraceError
from stepscope.tui.render.heatmap import HeatmapRenderable
from stepscope.tui.views.heatmap import (
    SCALES,
    ZOOMS,
    AttentionMap,
    Viewport,
    attention_map,
    cell_info,
    default_key,
    extent,
    fit_zoom,
    key_span,
    no_attention,
    omitted_rows,
    sink_columns,
    zoom_label,
)
from stepscope.tui.widgets.pane import Pane

HEADER_LINES = 2  # the header and the readout line
TOP_LINES = 2  # the position ruler and the cursor column's label (one line when a row wraps)
LEGEND_LINES = 1
LABEL_WIDTH = 12


class HeatmapPane(Pane, can_focus=True):
    """Attention weights of `layer`/`head` at `step`: the full causal map at the prefill, the new
    query row at a decode step (wrapped over lines so every key shows; only the window's keys on a
    sliding-window layer), or every row so far when stacked. A cell cursor (arrows, or a click)
    selects a query/key pair; the readout line explains it. Follows the newest position until
    panned; `0` goes back to following. From the manifest's facts: an attention-sink column is
    drawn apart (labelled `sink`), a layer without attention says why, and rows the recording
    budget did not store are recomputed from q and k and announced on a note line.

    | Key(s) | Description |
    | :- | :- |
    | `←` `→` `↑` `↓` | Move the cell cursor (key, query). |
    | `+` `=` | Zoom in (×1 … ×4 characters per key). |
    | `-` | Zoom out (pooled 1/2, 1/4 …: each cell the maximum of its block). |
    | `shift+←→↑↓`, `H` `J` `K` `L` | Pan left, down, up, right. |
    | `s` | Stack the rows of all steps so far (decode steps). |
    | `v` | Colour scale: per map, fixed 0–1, log. |
    | `0` | Reset zoom, pan and cell, follow the newest position. |
    """

    BINDINGS = [
        Binding("left", "cell(0, -1)", "Key-", show=False),
        Binding("right", "cell(0, 1)", "Key+", show=False),
        Binding("up", "cell(-1, 0)", "Query-", show=False),
        Binding("down", "cell(1, 0)", "Query+", show=False),
        Binding("plus,equals_sign", "zoom(-1)", "Zoom in", show=False),
        Binding("minus", "zoom(1)", "Zoom out", show=False),
        Binding("shift+left,H", "pan(0, -1)", "Pan left", show=False),
        Binding("shift+right,L", "pan(0, 1)", "Pan right", show=False),
        Binding("shift+up,K", "pan(-1, 0)", "Pan up", show=False),
        Binding("shift+down,J", "pan(1, 0)", "Pan down", show=False),
        Binding("s", "toggle_stack", "Stack rows"),
        Binding("v", "cycle_scale", "Scale"),
        Binding("0", "reset_view", "Reset view", show=False),
    ]

    WATCHES = frozenset({"step", "layer", "head", "query", "key"})

    stacked: reactive[bool] = reactive(False)
    scale: reactive[str] = reactive("map")

    def __init__(self, trace=None, **kwargs) -> None:
        super().__init__(trace, **kwargs)
        self._origin = (0, 0)  # top-left data cell when not following
        self.follow = True  # keep the newest rows/keys in view
        self.level: int | None = None  # index into ZOOMS; None = the most zoomed-in level that fits
        self.last_map: AttentionMap | None = None
        self._reveal = False  # the cell cursor moved: bring it into view on the next draw
        self._layout: tuple | None = None  # (grid y, grid x, per line, wrap) of the last drawing
        self._extent_memo: tuple = (None, (1, 1))

    def watch_stacked(self, stacked: bool) -> None:
        self.follow = True

    def on_cursor(self, old, new) -> None:
        changed = new.changed(old)
        if changed & {"query", "key"}:
            self._reveal = True
            if "query" in changed and new.query is not None and not self.stacked and self._trace is not None \
                    and len(self._trace.steps):
                start = self._trace.steps[self.step_index].positions[0]
                if new.query < start:
                    self.stacked = True  # a query of an earlier step: its row is in the stacked map
        super().on_cursor(old, new)

    # -- geometry -------------------------------------------------------------------------------
    def _extent(self) -> tuple[int, int]:
        """(rows, cols) of the whole map (memoised: a recorded step's extent never changes)."""
        key = (id(self._trace), self.step_index, self.stacked, self.cursor.layer)
        if self._extent_memo[0] != key:
            self._extent_memo = (key, extent(self._trace, self.step_index, self.stacked, self.cursor.layer))
        return self._extent_memo[1]

    def _wraps(self) -> bool:
        return not self.stacked and self._extent()[0] == 1

    def _omitted(self) -> tuple[int, int] | None:
        """Query positions [q0, q1) of the layer's map the budget left out at this step (or at the
        prefill, whose rows a stacked map shows), or None."""
        steps = self._trace.steps
        rows = omitted_rows(steps[self.step_index], self.cursor.layer)
        return rows if rows is not None or not self.stacked else omitted_rows(steps[0], self.cursor.layer)

    def _room(self) -> tuple[int, int]:
        """(lines, cells) for the grid."""
        top = 1 if self._wraps() else TOP_LINES
        has_trace = self._trace is not None and len(self._trace.steps)
        note = 1 if has_trace and self._omitted() is not None else 0
        sink = has_trace and sink_columns(self._trace.model)
        height = max(1, self.content_size.height - HEADER_LINES - top - LEGEND_LINES - note - (1 if sink and self._wraps() else 0))
        width = max(1, self.content_size.width - LABEL_WIDTH - 1 - (1 + ZOOMS[0][0] if sink and not self._wraps() else 0))
        return height, width

    @property
    def zoom_level(self) -> int:
        """The zoom level in use (the automatic fit unless `+`/`-` chose one)."""
        if self.level is not None:
            return self.level
        if self._trace is None or not len(self._trace.steps):
            return ZOOMS.index((1, 1))
        return fit_zoom(*self._extent(), *self._room(), wrap=self._wraps())

    @property
    def cell(self) -> int:
        """Characters per drawn key column: the level's, or at a pooled level as many (≤ 4) as
        spread the pooled map over the pane's width."""
        cell, pool = ZOOMS[self.zoom_level]
        if pool == 1 or self._trace is None or not len(self._trace.steps) or self._wraps():
            return cell
        drawn = -(-self._extent()[1] // pool)
        return max(1, min(ZOOMS[0][0], self._room()[1] // max(drawn, 1)))

    @property
    def pool(self) -> int:
        """Data cells per drawn cell along each axis when zoomed out."""
        return ZOOMS[self.zoom_level][1]

    def _first_positions(self) -> tuple[int, int]:
        """(position of data row 0, position of data column 0)."""
        if self.stacked:
            return 0, 0
        return self._trace.steps[self.step_index].positions[0], key_span(self._trace, self.step_index,
                                                                          self.cursor.layer)[0]

    def viewport(self) -> Viewport:
        """The window of data that fits the pane at the current zoom, following or panned."""
        height, width = self._room()
        per_line = max(1, width // self.cell)
        if self._trace is None or not len(self._trace.steps):
            return Viewport(0, 0, height * self.pool, per_line * self.pool)
        n_rows, n_cols = self._extent()
        if self._wraps():
            rows, cols = 1, height * per_line * self.pool
        else:
            rows, cols = height * self.pool, per_line * self.pool
        if self._reveal:
            self._reveal_cell(rows, cols)
        if self.follow:
            return Viewport(n_rows - rows, n_cols - cols, rows, cols).clamp(n_rows, n_cols)
        return Viewport(self._origin[0], self._origin[1], rows, cols).clamp(n_rows, n_cols)

    def _reveal_cell(self, rows: int, cols: int) -> None:
        """Pan so the selected cell is in the window (when it is not already)."""
        self._reveal = False
        q, k = self.selected()
        r0, c0 = self._first_positions()
        r, c = q - r0, k - c0
        n_rows, n_cols = self._extent()
        vp = (Viewport(n_rows - rows, n_cols - cols, rows, cols) if self.follow
              else Viewport(self._origin[0], self._origin[1], rows, cols)).clamp(n_rows, n_cols)
        if vp.row0 <= r < vp.row0 + vp.rows and vp.col0 <= c < vp.col0 + vp.cols:
            return
        row0 = vp.row0 if vp.row0 <= r < vp.row0 + vp.rows else r - rows // 2
        col0 = vp.col0 if vp.col0 <= c < vp.col0 + vp.cols else c - cols // 2
        moved = Viewport(row0, col0, rows, cols).clamp(n_rows, n_cols)
        self._origin, self.follow = (moved.row0, moved.col0), False

    def selected(self) -> tuple[int, int]:
        """(query, key) positions of the cell cursor: the cursor's cell clamped to this map; by
        default the newest query and the key it attends most."""
        trace = self._trace
        r0, c0 = self._first_positions()
        n_rows, n_cols = self._extent()
        q = self.cursor.query
        q = r0 + n_rows - 1 if q is None else min(max(q, r0), r0 + n_rows - 1)
        k = self.cursor.key
        if k is None:
            k = default_key(trace, self.step_index, self.cursor.layer, self.cursor.head, q)
        return q, min(max(k, c0), c0 + n_cols - 1)

    # -- actions --------------------------------------------------------------------------------
    def action_cell(self, dq: int, dk: int) -> None:
        """Move the cell cursor by one drawn cell (a wrapped decode row: ↑↓ move a line)."""
        if self._trace is None or not len(self._trace.steps):
            return
        q, k = self.selected()
        if self._wraps() and dq:
            dk, dq = dq * max(1, self._room()[1] // self.cell), 0
        r0, c0 = self._first_positions()
        n_rows, n_cols = self._extent()
        q = min(max(q + dq * self.pool, r0), r0 + n_rows - 1)
        k = min(max(k + dk * self.pool, c0), c0 + n_cols - 1)
        self.move(query=q, key=k)

    def action_zoom(self, delta: int) -> None:
        self.level = min(max(0, self.zoom_level + delta), len(ZOOMS) - 1)
        self.refresh()

    def action_pan(self, drow: int, dcol: int) -> None:
        vp = self.viewport()
        step_r, step_c = max(1, vp.rows // 4), max(1, vp.cols // 4)
        moved = vp.moved(drow * step_r, dcol * step_c)
        if self._trace is not None:
            moved = moved.clamp(*self._extent())
        self._origin = (moved.row0, moved.col0)
        self.follow = False
        self.refresh()

    def action_toggle_stack(self) -> None:
        self.stacked = not self.stacked

    def action_cycle_scale(self) -> None:
        self.scale = SCALES[(SCALES.index(self.scale) + 1) % len(SCALES)]

    def action_reset_view(self) -> None:
        self.follow = True
        self._origin = (0, 0)
        self.level = None
        self.move(query=None, key=None)
        self.refresh()

    # -- mouse ------------------------------------------------------------------------------------
    def on_click(self, event: events.Click) -> None:
        """A click on a cell selects it."""
        offset = event.get_content_offset(self)
        amap = self.last_map
        if offset is None or amap is None or self._layout is None:
            return
        grid_y, grid_x, per_line, wraps = self._layout
        line, x = offset.y - grid_y, offset.x - grid_x
        if line < 0 or x < 0:
            return
        col = x // self.cell
        if wraps:
            if col >= per_line:
                return
            row, col = 0, line * per_line + col
        else:
            row = line
        if row >= amap.values.shape[0] or col >= amap.values.shape[1]:
            return
        event.stop()
        self.move(query=amap.row_positions[row], key=amap.col_positions[col])

    # -- drawing --------------------------------------------------------------------------------
    def _header(self, amap: AttentionMap) -> Text:
        """One line, most important first: which head, zoom, step, then the window (positions)."""
        vp = amap.viewport
        first = amap.row_positions[0]
        q = f"q {first}" if vp.rows == 1 else f"q {first}–{first + vp.rows - 1}"
        what = "stacked" if amap.stacked else amap.kind
        k0 = amap.first_key + vp.col0
        window = f" · window {amap.window}" if amap.window else ""
        return Text.assemble(
            (f"L{amap.layer} H{amap.head}", "bold"),
            f" (KV {amap.kv_head}) · zoom {zoom_label(self.zoom_level)} · step {amap.step} {what}",
            f" · {q} · k {k0}–{k0 + vp.cols - 1} of {amap.first_key + amap.n_cols}{window}",
            ("" if self.follow else " · panned", "dim"),
            no_wrap=True, overflow="ellipsis",
        )

    def _readout(self, q: int, k: int) -> Text:
        info = cell_info(self._trace, self.step_index, self.cursor.layer, self.cursor.head, q, k)
        text = info.line() if info is not None else f"q {q} → k {k}"
        return Text.assemble(("▸ ", "bold"), text, no_wrap=True, overflow="ellipsis")

    def render(self):
        trace = self._trace
        if trace is None or not len(trace.steps):
            self.last_map = None
            return Text("attention: no trace", style="dim")
        layer, head = self.cursor.layer, self.cursor.head
        reason = no_attention(trace.model, layer)
        if reason is not None:
            self.last_map = None
            return Text(f"attention: layer {layer} has no attention map: {reason}", style="dim")
        try:
            amap = attention_map(trace, self.step_index, layer, head, stack=self.stacked, viewport=self.viewport(),
                                 pool=self.pool, scale=self.scale)
        except TraceError as exc:  # rows the budget left out that cannot be recomputed
            self.last_map = None
            return Text(f"attention: {exc}", style="dim")
        self.last_map = amap
        if amap is None:
            return Text(f"attention: blocks.{layer}.attn.hook_pattern was not recorded at step {self.step_index}",
                        style="dim")
        q, k = self.selected()
        r0, c0 = self._first_positions()
        vp = amap.viewport
        row, col = (q - r0 - vp.row0) // self.pool, (k - c0 - vp.col0) // self.pool
        in_view = 0 <= row < amap.values.shape[0] and 0 <= col < amap.values.shape[1]
        wraps = self._wraps()
        body = HeatmapRenderable.from_map(amap, cell=self.cell, label_width=LABEL_WIDTH,
                                          cursor=(row, col) if in_view else None, wrap=wraps)
        per_line = body.cols_per_line(self.content_size.width)
        omitted = self._omitted()
        note = [] if omitted is None else [self._note(omitted, amap.recomputed)]
        self._layout = (HEADER_LINES + len(note) + (1 if wraps else TOP_LINES), LABEL_WIDTH + 1, per_line, wraps)
        return Group(self._header(amap), self._readout(q, k), *note, body)

    def _note(self, omitted: tuple[int, int], drawn: tuple[int, int] | None) -> Text:
        """What the budget left out and that the drawn rows are recomputed from q and k."""
        q0, q1 = omitted
        shown = "; rows drawn here are recomputed from hook_rot_q/hook_rot_k (exact)" if drawn else ""
        return Text(f"budget: query rows {q0}–{q1 - 1} of this map were not stored{shown}",
                    style="yellow", no_wrap=True, overflow="ellipsis")
