"""Attention heatmap pane: the selected layer/head of the current step, drawn with half blocks."""

from __future__ import annotations

from rich.console import Group
from rich.text import Text
from textual.binding import Binding
from textual.reactive import reactive

from tui.render.heatmap import HeatmapRenderable
from tui.widgets.pane import Pane
from tui.views.heatmap import AttentionMap, Viewport, attention_map, extent

HEADER_LINES = 1
COL_LABEL_ROWS = 3
LEGEND_LINES = 1
LABEL_WIDTH = 10
MIN_ZOOM, MAX_ZOOM = -3, 3
FIT_CELL = 4  # largest automatic cell (characters per key column)


class HeatmapPane(Pane, can_focus=True):
    """Attention weights of `layer`/`head` at `step`: the full causal map at the prefill, the new
    query row at a decode step (only the window's keys on a sliding-window layer), or every row
    so far when stacked; keys outside a sliding window are drawn apart from causally masked ones.
    Follows the newest position until panned; `0` goes back to following.

    | Key(s) | Description |
    | :- | :- |
    | `+` `=` | Zoom in (bigger cells). |
    | `-` | Zoom out (each cell the maximum of a 2×2, 4×4, 8×8 block). |
    | `shift+←→↑↓`, `H` `J` `K` `L` | Pan left, down, up, right. |
    | `s` | Stack the rows of all steps so far (decode steps). |
    | `0` | Reset zoom and pan, follow the newest position. |
    """

    BINDINGS = [
        Binding("plus,equals_sign", "zoom(1)", "Zoom in", show=False),
        Binding("minus", "zoom(-1)", "Zoom out", show=False),
        Binding("shift+left,H", "pan(0, -1)", "Pan left", show=False),
        Binding("shift+right,L", "pan(0, 1)", "Pan right", show=False),
        Binding("shift+up,K", "pan(-1, 0)", "Pan up", show=False),
        Binding("shift+down,J", "pan(1, 0)", "Pan down", show=False),
        Binding("s", "toggle_stack", "Stack rows"),
        Binding("0", "reset_view", "Reset view", show=False),
    ]

    stacked: reactive[bool] = reactive(False)
    zoom: reactive[int] = reactive(0)

    def __init__(self, trace=None, **kwargs) -> None:
        super().__init__(trace, **kwargs)
        self._origin = (0, 0)  # top-left data cell when not following
        self.follow = True  # keep the newest rows/keys in view
        self.auto_fit = True  # zoom 0 = the largest cell that fits the whole map
        self.last_map: AttentionMap | None = None

    # -- reactives (the cursor is clamped by the app) -------------------------------------------------
    def validate_zoom(self, value: int) -> int:
        return min(max(MIN_ZOOM, int(value)), MAX_ZOOM)

    def watch_stacked(self, stacked: bool) -> None:
        self.follow = True

    # -- geometry -------------------------------------------------------------------------------
    @property
    def cell(self) -> int:
        """Characters per data column (and half-lines per data row): at zoom 0 the largest that
        fits the whole map in the pane (at most FIT_CELL), more per `+`."""
        if self.zoom < 0:
            return 1
        return self._fit_cell() + self.zoom

    def _fit_cell(self) -> int:
        if not self.auto_fit or self._trace is None or not len(self._trace.steps):
            return 1
        height = max(1, self.size.height - HEADER_LINES - COL_LABEL_ROWS - LEGEND_LINES)
        width = max(1, self.size.width - LABEL_WIDTH - 1)
        n_rows, n_cols = extent(self._trace, self.step_index, self.stacked, self.cursor.layer)
        return max(1, min(FIT_CELL, width // max(n_cols, 1), (2 * height) // max(n_rows, 1)))

    @property
    def pool(self) -> int:
        """Data cells per drawn cell along each axis when zoomed out."""
        return 2 ** (-self.zoom) if self.zoom < 0 else 1

    def viewport(self) -> Viewport:
        """The window of data that fits the pane at the current zoom, following or panned."""
        height = max(1, self.size.height - HEADER_LINES - COL_LABEL_ROWS - LEGEND_LINES)
        width = max(1, self.size.width - LABEL_WIDTH - 1)
        rows = max(1, (2 * height) // self.cell) * self.pool
        cols = max(1, width // self.cell) * self.pool
        if self._trace is None:
            return Viewport(0, 0, rows, cols)
        n_rows, n_cols = extent(self._trace, self.step_index, self.stacked, self.cursor.layer)
        if self.follow:
            return Viewport(n_rows - rows, n_cols - cols, rows, cols).clamp(n_rows, n_cols)
        return Viewport(self._origin[0], self._origin[1], rows, cols).clamp(n_rows, n_cols)

    # -- actions --------------------------------------------------------------------------------
    def action_zoom(self, delta: int) -> None:
        self.zoom += delta

    def action_pan(self, drow: int, dcol: int) -> None:
        vp = self.viewport()
        step_r, step_c = max(1, vp.rows // 4), max(1, vp.cols // 4)
        moved = vp.moved(drow * step_r, dcol * step_c)
        if self._trace is not None:
            moved = moved.clamp(*extent(self._trace, self.step_index, self.stacked, self.cursor.layer))
        self._origin = (moved.row0, moved.col0)
        self.follow = False
        self.refresh()

    def action_toggle_stack(self) -> None:
        self.stacked = not self.stacked

    def action_reset_view(self) -> None:
        self.follow = True
        self._origin = (0, 0)
        self.zoom = 0
        self.refresh()

    # -- drawing --------------------------------------------------------------------------------
    def _header(self, amap: AttentionMap) -> Text:
        """One line, most important first: which head, zoom, step, then the window (positions)."""
        vp = amap.viewport
        first = amap.row_positions[0]
        q = f"q {first}" if vp.rows == 1 else f"q {first}–{first + vp.rows - 1}"
        what = "stacked" if amap.stacked else amap.kind
        zoom = f"×{self.cell}" if self.pool == 1 else f"1/{self.pool}"
        k0 = amap.first_key + vp.col0
        window = f" · window {amap.window}" if amap.window else ""
        return Text.assemble(
            (f"L{amap.layer} H{amap.head}", "bold"), f" (KV {amap.kv_head}) · zoom {zoom} · step {amap.step} {what}",
            f" · {q} · k {k0}–{k0 + vp.cols - 1} of {amap.first_key + amap.n_cols}{window}",
            ("" if self.follow else " · panned", "dim"),
            no_wrap=True, overflow="ellipsis",
        )

    def render(self):
        trace = self._trace
        if trace is None or not len(trace.steps):
            self.last_map = None
            return Text("attention: no trace", style="dim")
        amap = attention_map(trace, self.step_index, self.cursor.layer, self.cursor.head, stack=self.stacked,
                             viewport=self.viewport(), pool=self.pool)
        self.last_map = amap
        if amap is None:
            return Text(f"attention: blocks.{self.cursor.layer}.attn.hook_pattern was not recorded at step {self.step_index}",
                        style="dim")
        body = HeatmapRenderable.from_map(amap, cell=self.cell, label_width=LABEL_WIDTH,
                                          col_label_rows=COL_LABEL_ROWS)
        return Group(self._header(amap), body)
