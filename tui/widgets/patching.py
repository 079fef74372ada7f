"""Patching pane: where is it computed? The layers × positions (or layers × heads) grid of an activation
patching sweep of a corrupted trace against the app's (clean) trace.

Each cell is the logit difference clean token − corrupted token with that one activation restored from
the clean run, normalised: 0 = the corrupted run, 1 = the clean run. The selected row is the app's
layer (j/k move it everywhere); for heads the selected column is the app's head. A sweep runs in a thread
worker that posts its progress; the result is saved beside the clean trace and reopened from there.

Keys (when focused): ↑/↓ layer, ←/→ position or head, `s` site, `m` method (patching / attribution),
`r` run the sweep, `Enter` the layer/head's attention (Attention pane), `y` the Why pane, `t` the cell
as a TransformerLens / nnsight snippet, `o` choose the corrupted trace. A click selects a cell.
"""

from __future__ import annotations

import math
import textwrap
from typing import Any, cast

from rich.text import Text
from textual.binding import Binding
from textual.message import Message

from stepscope import seam
from stepscope.tracer import load_trace
from stepscope.tracer.inert import inert
from stepscope.tracer.patch_format import METHODS, SITES, PatchingError, PatchingResult, check_pair, result_path, saved_result
from stepscope.tracer.snippets import snippets_for_patch
from stepscope.tui.views.patching import cell_label, clamp_cell, column_labels, level, readout, title
from stepscope.tui.widgets.layers import window
from stepscope.tui.widgets.pane import Pane

SITE_ORDER = list(SITES)
LEVEL_CLASSES = {lv: f"patching--{'p' if lv > 0 else 'n'}{abs(lv)}" for lv in (-4, -3, -2, -1, 1, 2, 3, 4)}
ROW_LABEL = 6  # "   12 " before the cells
TOP = 2  # title and column header lines above the rows


class PatchingPane(Pane, can_focus=True):
    """The grid of a patching result of (the app's trace, `corrupt`), its readout and its sweep worker."""

    COMPONENT_CLASSES = {"patching--header", "patching--selected", "patching--row", *LEVEL_CLASSES.values()}
    WATCHES = frozenset({"layer", "head"})
    BINDINGS = [
        Binding("up", "layer(-1)", "Layer-", show=False, tooltip="Previous layer"),
        Binding("down", "layer(1)", "Layer+", show=False, tooltip="Next layer"),
        Binding("left", "column(-1)", "Column-", show=False, tooltip="Previous position (or head)"),
        Binding("right", "column(1)", "Column+", show=False, tooltip="Next position (or head)"),
        Binding("s", "site", "Site", tooltip="Next site: resid_pre, attn_out, mlp_out, head"),
        Binding("m", "method", "Method", tooltip="Patching or its attribution estimate"),
        Binding("r", "run", "Run", tooltip="Run the sweep (saved beside the clean trace)"),
        Binding("enter", "attention", "Attention", tooltip="The selected layer/head's attention (Attention pane)"),
        Binding("y", "why", "Why", tooltip="The selected layer in the Why pane"),
        Binding("t", "snippet", "Snippet", tooltip="The selected cell as a TransformerLens / nnsight snippet"),
        Binding("o", "open", "Corrupted", tooltip="Choose the corrupted trace directory"),
    ]

    class Progress(Message):
        """A sweep's progress (posted by its worker thread)."""

        def __init__(self, key: tuple, done: int, total: int) -> None:
            super().__init__()
            self.key, self.done, self.total = key, done, total

    class Done(Message):
        """A sweep finished: its result and the loaded model (kept for the next sweep)."""

        def __init__(self, key: tuple, result, model, note: str = "") -> None:
            super().__init__()
            self.key, self.result, self.model, self.note = key, result, model, note

    class Failed(Message):
        def __init__(self, key: tuple, error: str) -> None:
            super().__init__()
            self.key, self.error = key, error

    class SnippetAsked(Message):
        """`t`: show these snippets ({library: code}) of the selected cell (the screen opens the dialog)."""

        def __init__(self, title: str, snippets: dict) -> None:
            super().__init__()
            self.title, self.snippets = title, snippets

    class CorruptAsked(Message):
        """`o`: ask for the corrupted trace's directory; `check(text)` says what is wrong with one, `done(text)`
        takes the chosen one (the screen opens the prompt)."""

        def __init__(self, check, done) -> None:
            super().__init__()
            self.check, self.done = check, done

    def __init__(self, trace=None, **kwargs) -> None:
        super().__init__(trace, **kwargs)
        self.corrupt: Any = None  # the corrupted trace (a loaded trace) or None
        self.site, self.step, self.method, self.device = "resid_pre", 0, "patch", "auto"
        self.result: PatchingResult | None = None
        self.column = 0
        self.status = ""
        self.running: tuple | None = None  # the key of the sweep a worker computes
        self.model = None  # loaded once, by the first sweep's worker
        self._run_when_shown = False
        self._shown_for: tuple | None = None

    # -- state ------------------------------------------------------------------------------------
    def set_pair(self, corrupt, site: str = "resid_pre", step: int = 0, method: str = "patch", device: str = "auto",
                 run: bool = False) -> None:
        """Sweep `corrupt` against the app's trace; `run`: compute it when no saved result exists."""
        self.corrupt, self.site, self.step, self.method, self.device = corrupt, site, step, method, device
        self._run_when_shown = run
        self._shown_for = None
        if self.is_mounted and self._trace is not None:
            self._load()

    @property
    def key(self) -> tuple:
        return (getattr(self._trace, "path", None), getattr(self.corrupt, "path", None), self.site, self.method, self.step)

    def on_trace(self) -> None:
        if self.corrupt is not None and self._shown_for != self.key:
            self._load()

    def _load(self) -> None:
        """The saved result of the current key, or a note (and the sweep, when asked to run)."""
        self._shown_for = self.key
        self.result, self.status = None, ""
        try:
            check_pair(self._trace, self.corrupt, self.site, self.step)
            self.result = saved_result(self._trace.path, self.corrupt.path, self.site, self.method, self.step)
        except (PatchingError, OSError, ValueError) as exc:
            self.status = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            self._run_when_shown = False
        run, self._run_when_shown = self._run_when_shown, False  # asked for the first pair only
        if self.result is None and not self.status:
            if run:
                self.action_run()
            else:
                self.status = f"no saved {self.method} sweep of {self.site} at step {self.step}: r runs it"
        self.refresh()

    # -- the sweep worker ----------------------------------------------------------------------------
    def action_run(self) -> None:
        if self.corrupt is None or self._trace is None:
            self.app.notify("choose the corrupted trace first (o)", timeout=3)
            return
        if self.running is not None:
            self.app.notify("a sweep is running", timeout=2)
            return
        key, clean_path, corrupt_path = self.key, self._trace.path, self.corrupt.path
        site, step, method, device, model = self.site, self.step, self.method, self.device, self.model
        self.running, self.status = key, f"sweeping {site} ({method})…"
        self.refresh()

        def work() -> None:  # a thread: reads its own copies of the traces, touches no UI state
            try:
                clean, corrupt = load_trace(clean_path), load_trace(corrupt_path)
                handle = model if model is not None else seam.patching_model(clean, device=device)
                result = seam.patching_sweep(handle, clean, corrupt, site=site, step=step, method=method,
                                             progress=lambda done, total: self.post_message(self.Progress(key, done, total)))
                note = ""
                try:
                    result.save(result_path(clean_path, corrupt_path, site, method, step))
                except OSError as exc:
                    note = f"not saved: {exc.strerror or exc}"
                self.post_message(self.Done(key, result, handle, note))
            except Exception as exc:  # noqa: BLE001 - any failure is one line in the pane
                text = str(exc).strip().splitlines()
                self.post_message(self.Failed(key, text[0] if text else type(exc).__name__))

        self.run_worker(work, thread=True, group="patching", name="patching", exit_on_error=False)

    def on_patching_pane_progress(self, message: Progress) -> None:
        message.stop()
        if message.key == self.running:
            self.status = f"sweeping {self.site} ({self.method}): {message.done}/{message.total} cells…"
            self.refresh()

    def on_patching_pane_done(self, message: Done) -> None:
        message.stop()
        self.running = None
        self.model = message.model
        if message.key == self.key:
            self.result = message.result
            seconds = message.result.seconds
            self.status = (f"swept in {seconds:.1f} s" if seconds is not None else "") + (f" · {message.note}" if message.note else "")
        self.refresh()

    def on_patching_pane_failed(self, message: Failed) -> None:
        message.stop()
        self.running = None
        if message.key == self.key:
            self.status = f"sweep failed: {message.error}"
        self.refresh()

    # -- keys -----------------------------------------------------------------------------------------
    def _cell(self) -> tuple[int, int]:
        column = self.cursor.head if self.site == "head" else self.column
        return clamp_cell(self.result, self.cursor.layer, column) if self.result is not None else (self.cursor.layer, column)

    def action_layer(self, delta: int) -> None:
        self.move(layer=max(0, self.cursor.layer + delta))

    def action_column(self, delta: int) -> None:
        if self.result is None:
            return
        width = self.result.values.shape[1]
        if self.site == "head":
            self.move(head=max(0, min(self.cursor.head + delta, width - 1)))
        else:
            self.column = max(0, min(self.column + delta, width - 1))
            self.refresh()

    def _switch(self, site: str | None = None, method: str | None = None) -> None:
        if self.running is not None:
            self.app.notify("a sweep is running", timeout=2)
            return
        self.site = site or self.site
        self.method = method or self.method
        if self.corrupt is not None and self._trace is not None:
            self._load()
        self.refresh()

    def action_site(self) -> None:
        self._switch(site=SITE_ORDER[(SITE_ORDER.index(self.site) + 1) % len(SITE_ORDER)])

    def action_method(self) -> None:
        self._switch(method=METHODS[(METHODS.index(self.method) + 1) % len(METHODS)])

    def _jump(self, pane_id: str) -> None:
        if self.result is None:
            return
        layer, column = self._cell()
        if self.site == "head":
            self.move(layer=layer, head=column)
        else:
            self.move(layer=layer)
        cast(Any, self.screen).action_show_pane(pane_id)  # the main screen (widgets import no screen)

    def action_attention(self) -> None:
        self._jump("heatmap")

    def action_why(self) -> None:
        self._jump("why")

    def action_snippet(self) -> None:
        if self.result is None or self.corrupt is None or self._trace is None:
            return
        layer, column = self._cell()
        n = len(self.result.tokens)
        clean_ids = [int(t["id"]) for t in self._trace.tokens[:n]]
        corrupt_ids = [int(t["id"]) for t in self.corrupt.tokens[:n]]
        snippets = snippets_for_patch(self.result, self._trace.model, clean_ids, corrupt_ids, layer, column)
        self.post_message(self.SnippetAsked(f"patch {self.site} {cell_label(self.result, layer, column)}", snippets))

    def action_open(self) -> None:
        loaded: dict = {}

        def check(text: str) -> str | None:
            try:
                loaded[text] = other = load_trace(text.strip())
                if self._trace is not None:
                    check_pair(self._trace, other, self.site, self.step)
            except Exception as exc:  # noqa: BLE001 - any unusable directory: its one line under the field
                return str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            return None

        def done(value: str | None) -> None:
            if value is not None and value in loaded:
                self.set_pair(loaded[value], self.site, self.step, self.method, self.device)

        self.post_message(self.CorruptAsked(check, done))

    def on_click(self, event) -> None:
        """A click on a cell selects it."""
        offset = event.get_content_offset(self)
        if offset is None or self.result is None or offset.y < TOP or offset.x < ROW_LABEL:
            return
        layer = self._first_row + offset.y - TOP
        column = (offset.x - ROW_LABEL) // self.cell_width
        rows, cols = self.result.values.shape
        if layer >= min(rows, self._last_row) or column >= cols:
            return
        if self.site == "head":
            self.move(layer=layer, head=column)
        else:
            self.column = column
            self.move(layer=layer)
            self.refresh()

    # -- drawing --------------------------------------------------------------------------------------
    _first_row = 0
    _last_row = 0
    cell_width = 6

    def _wrapped(self, text: str) -> list[str]:
        """A status line broken to the pane's width (a long path and its reason both stay visible)."""
        return textwrap.wrap(inert(text, 600), max(20, self.size.width or 80), break_on_hyphens=False) or [""]

    def render(self) -> Text:
        style = self.get_component_rich_style
        header = style("patching--header")
        if self.corrupt is None:
            return Text("no corrupted trace: o chooses one (or run `stepscope patch CLEAN CORRUPT`)", style=header)
        result = self.result
        if result is None:
            return Text("\n").join([Text(f"{self.method} · {self.site} · step {self.step}", style=header),
                                    *(Text(line) for line in self._wrapped(self.status))])
        labels = column_labels(result)
        width = max(6, max(len(label) for label in labels) + 1)
        self.cell_width = width
        lines = [Text(title(result), style=header)]
        head_line = Text("layer ", style=header)
        for label in labels:
            head_line.append(label.rjust(width - 1) + " ")
        lines.append(head_line)
        layer, column = self._cell()
        rows = result.values.shape[0]
        start, end = window(layer, rows, max(1, self.size.height - TOP - 4))
        self._first_row, self._last_row = start, end
        selected = style("patching--selected")
        levels = {lv: style(name) for lv, name in LEVEL_CLASSES.items()}
        for row in range(start, end):
            line = Text(f"{row:>5} ", style=style("patching--row") if row == layer else "")
            for col, v in enumerate(result.values[row]):
                text = "     ·" if not math.isfinite(v) else f"{v:6.2f}"
                cell_style = selected if (row, col) == (layer, column) else levels.get(level(v), "")
                line.append(text.rjust(width - 1) + " ", style=cell_style)
            lines.append(line)
        lines += [Text(inert(line, 400), style=header) for line in readout(result, layer, column)]
        keys = "s site · m method · r rerun · Enter attention · y why · t snippet"
        lines += [Text(line, style="dim") for line in self._wrapped(self.status + (" · " if self.status else "") + keys)]
        return Text("\n").join(lines)
