"""Watch pane (sidebar, under the heads): expressions evaluated at every step, each shown as its
value at the current step and a sparkline over all steps (the current step highlighted).

The current step's value is computed at once (one step: cheap); the other steps are evaluated in a
thread worker over a private `Trace` of the same directory (the app's Trace stays the UI thread's)
and arrive as `WatchPane.Values` messages. Values are cached per step file. Hidden while empty.

| key (focused) | action |
|---|---|
| `↑` `↓` | select a watch |
| `d` `Del` | remove the selected watch |
| `a` | add a watch (also `=` anywhere, or Ctrl+P) |
"""

from __future__ import annotations

import math
import time

import numpy as np
from rich.text import Text
from textual import work
from textual.binding import Binding
from textual.message import Message
from textual.worker import get_current_worker

from stepscope.tracer.inert import inert
from stepscope.tui.render.spark import BLOCKS
from stepscope.tui.views.tensors import format_number
from stepscope.tui.watch import ExprError, Watch, fresh_step, private_trace
from stepscope.tui.watch.tokens import token_ids
from stepscope.tui.widgets.pane import Pane

WATCH_HINT = ('e.g. p(" Paris") · rank(" London") · entropy · norm(blocks.10.hook_resid_post[-1]) · '
              'pattern(5, 3)[-1, 0] · lens(12, " Paris") · Enter adds · Esc cancels')
CHUNK = 32  # steps evaluated per message from the worker
DUTY = 1.0  # the worker sleeps this many times its own work after each step: a key never waits long for the GIL
BACKOFF = 0.1  # seconds after a cursor move during which the worker waits (the user is stepping: keys first)
MAX_WATCHES = 12


def spark(values: np.ndarray, width: int) -> str:
    """`values` [n_steps] as `width` or fewer block characters, one per bin of steps (a bin shows
    its last known value; `·` where nothing is known yet), scaled min..max."""
    n = len(values)
    if n == 0 or width <= 0:
        return ""
    bins = min(n, width)
    edges = np.linspace(0, n, bins + 1).astype(np.int64)  # [bins + 1]
    finite = values[np.isfinite(values)]
    lo, hi = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 0.0)
    chars = []
    for b in range(bins):
        chunk = values[edges[b]:edges[b + 1]]
        known = chunk[np.isfinite(chunk)]
        if not known.size:
            chars.append("·")
            continue
        v = float(known[-1])
        level = 0 if hi <= lo else min(len(BLOCKS) - 1, int((v - lo) / (hi - lo) * (len(BLOCKS) - 1) + 0.5))
        chars.append(BLOCKS[level])
    return "".join(chars)


def bin_of(step: int, n: int, width: int) -> int:
    """The sparkline column that shows step `step` of `n`."""
    bins = min(n, width)
    return min(bins - 1, step * bins // max(n, 1))


class WatchPane(Pane, can_focus=True):
    """The watches: expression, value now, sparkline over steps."""

    DEFAULT_CSS = """
    WatchPane {
        height: auto;
        max-height: 50%;
        border-top: solid $primary 50%;
        border-title-color: $text-muted;
        display: none;
    }
    WatchPane.-has-watches {
        display: block;
    }
    WatchPane:focus {
        background: $boost;
    }
    """

    WATCHES = frozenset({"step"})
    BINDINGS = [
        Binding("up", "select(-1)", "Up", show=False),
        Binding("down", "select(1)", "Down", show=False),
        Binding("d,delete", "remove", "Remove watch"),
        Binding("a", "app.add_watch", "Add watch"),
    ]

    class Values(Message):
        """Values computed by the worker: `values[watch_text][step index] = (value, error)`."""

        def __init__(self, trace, values: dict[str, dict[int, tuple[float, str | None]]]) -> None:
            super().__init__()
            self.trace, self.values = trace, values

    def __init__(self, trace=None, **kwargs) -> None:
        super().__init__(trace, **kwargs)
        self.watches: list[Watch] = []
        self.selected = 0
        self.border_title = "watch"

    # -- the watches ------------------------------------------------------------------------------
    def add_watch(self, text: str) -> str | None:
        """Add `text` as a watch; returns an error message (one line, nothing changed) or None."""
        try:
            watch = Watch.compile(text, self.trace)
        except ExprError as exc:
            return str(exc)
        if any(w.text == watch.text for w in self.watches):
            return f"already watched: {watch.text}"
        if len(self.watches) >= MAX_WATCHES:
            return f"at most {MAX_WATCHES} watches"
        self.watches.append(watch)
        self.selected = len(self.watches) - 1
        self._changed()
        return None

    def remove_watch(self, index: int) -> None:
        if 0 <= index < len(self.watches):
            del self.watches[index]
            self.selected = max(0, min(self.selected, len(self.watches) - 1))
            self._changed()

    def _changed(self) -> None:
        self.set_class(bool(self.watches), "-has-watches")
        self.refresh(layout=True)
        self._evaluate_rest()

    # -- Pane hooks -------------------------------------------------------------------------------
    def on_trace(self) -> None:
        self._evaluate_rest()  # a live trace grew: its new steps

    def on_cursor(self, old, new) -> None:
        self._moved_at = time.monotonic()  # read by the worker (a float: no lock needed)
        super().on_cursor(old, new)

    def refresh_view(self) -> None:
        if not self.watches:
            return  # hidden: nothing to draw, no layout to redo
        if self.trace is not None and len(self.trace.steps):
            for watch in self.watches:  # the current step's values now (cached), so the height is known
                watch.at(self.trace, self.step_index)
        height = self.get_content_height(None, None, 0)  # the reason line comes and goes with the step
        self.refresh(layout=height != getattr(self, "_height", None))
        self._height = height

    def on_mount(self) -> None:
        self.set_class(bool(self.watches), "-has-watches")

    def get_content_height(self, container, viewport, width: int) -> int:
        return 2 * len(self.watches) + (1 if self.error_line() else 0)

    # -- evaluation in a worker -------------------------------------------------------------------
    def _evaluate_rest(self) -> None:
        trace = self.trace
        if trace is None or not self.watches or not len(trace.steps):
            return
        jobs = [(w, w.missing(trace)) for w in self.watches]
        jobs = [(w, missing) for w, missing in jobs if missing]
        if not jobs:
            return
        # a private Trace over the same directory: the worker never touches the app's Trace
        private = self._private = private_trace(trace, getattr(self, "_private", None))
        self._run(private, token_ids(trace), jobs)

    @work(thread=True, exclusive=True, group="watch", exit_on_error=False, name="watch")
    def _run(self, private, tokens, jobs) -> None:
        """Step by step (one step file read serves every watch), `CHUNK` steps per message. Each
        step is a fresh `Step` dropped after use: nothing accumulates over a long trace."""
        worker = get_current_worker()
        wanted: dict[int, list[Watch]] = {}
        for watch, missing in jobs:
            for i in missing:
                wanted.setdefault(i, []).append(watch)
        batch: dict[str, dict[int, tuple[float, str | None]]] = {}
        for count, index in enumerate(sorted(wanted), 1):
            if worker.is_cancelled:
                return
            while time.monotonic() - getattr(self, "_moved_at", 0.0) < BACKOFF and not worker.is_cancelled:
                time.sleep(BACKOFF / 4)  # the user is stepping: let the keys have the CPU
            start = time.perf_counter()
            step = fresh_step(private, private.manifest["steps"][index])
            for watch in wanted[index]:
                batch.setdefault(watch.text, {})[index] = watch.compute(private, index, tokens, step=step)
            step.release()
            time.sleep(min(0.05, max(0.001, (time.perf_counter() - start) * DUTY)))  # the UI thread first
            if count % CHUNK == 0:
                self.post_message(self.Values(private, batch))
                batch = {}
        if batch:
            self.post_message(self.Values(private, batch))

    def on_watch_pane_values(self, message: WatchPane.Values) -> None:
        message.stop()
        by_text = {w.text: w for w in self.watches}
        for text, values in message.values.items():
            watch = by_text.get(text)
            if watch is None:
                continue
            for index, (value, error) in values.items():
                watch.store(message.trace, index, value, error)
        self.refresh()

    # -- actions ----------------------------------------------------------------------------------
    def action_select(self, delta: int) -> None:
        if self.watches:
            self.selected = (self.selected + delta) % len(self.watches)
            self.refresh()

    def action_remove(self) -> None:
        self.remove_watch(self.selected)

    # -- drawing ----------------------------------------------------------------------------------
    def render(self) -> Text:
        trace = self.trace
        out = Text(no_wrap=True, overflow="ellipsis", end="")
        width = max(self.size.width, 10)
        if trace is None or not len(trace.steps):
            return out
        index, n = self.step_index, len(trace.steps)
        for i, watch in enumerate(self.watches):
            if i:
                out.append("\n")
            value = watch.at(trace, index)  # the current step: now (cached afterwards)
            error = watch.error_at(trace, index)
            mark = "▸" if i == self.selected and self.has_focus else " "
            label = Text(f"{mark}{inert(watch.text)}", style="bold" if i == self.selected else "")
            label.truncate(width, overflow="ellipsis")
            out.append_text(label)
            out.append("\n")
            shown = "–" if math.isnan(value) else format_number(value, 9).strip()
            out.append(f" {shown:>9} ", style="red" if error else "")
            chars = self._spark(watch, trace, width - 12)
            if chars:
                here = bin_of(index, n, width - 12)
                out.append(chars[:here], style="cyan")
                out.append(chars[here], style="reverse cyan")
                out.append(chars[here + 1:], style="cyan")
            if i == self.selected and error:
                out.append("\n")
                out.append(inert(f"  {error}"), style="dim red")
        return out

    def _spark(self, watch: Watch, trace, width: int) -> str:
        """The sparkline of `watch`, redrawn only when a value arrived, the trace grew or the width changed."""
        key = (id(trace), watch.version, len(trace.manifest["steps"]), width)
        memo = getattr(watch, "spark_memo", None)
        if memo is None or memo[0] != key:
            memo = watch.spark_memo = (key, spark(watch.cached(trace), width))
        return memo[1]

    def error_line(self) -> str | None:
        """Why the selected watch has no value at the current step (None when it has one)."""
        if not self.watches or self.trace is None or not len(self.trace.steps):
            return None
        return self.watches[self.selected].error_at(self.trace, self.step_index)
