"""The one base class of every view of the trace (panes, sidebar lists, status bar, token strip).

The app hands each view the trace and the cursor by one path, `show(trace, cursor)`; a view
redraws when the trace changes or a cursor field it `WATCHES` changes, and asks the app to move
the cursor by posting `Pane.Moved(...)` (`self.move(layer=3)`), never by setting state itself.
"""

from __future__ import annotations

from rich.text import Text
from textual.geometry import Region
from textual.message import Message
from textual.reactive import var
from textual.strip import Strip
from textual.widget import Widget

from stepscope.tracer.inert import inert
from stepscope.tui.state import FIELDS, Cursor


class Pane(Widget):
    """A view of `trace` at `cursor`. Subclasses override `refresh_view()` (default: repaint),
    `on_cursor(old, new)` when a cursor move needs more than a redraw, and optionally
    `prefetch(step_index)` (warm the views cache for a neighbouring step)."""

    WATCHES: frozenset[str] = frozenset({"step", "layer", "head"})
    """Cursor fields whose change redraws this view."""

    PREFETCH_WHEN_HIDDEN = False
    """Cheap enough to prefetch the current step while another pane shows."""

    cursor: var[Cursor] = var(Cursor, init=False)
    """Set by the app (clamped to the trace); read-only for the view."""

    class Moved(Message):
        """A view asks the app to move the cursor: `changes` maps cursor fields to values."""

        def __init__(self, **changes) -> None:
            super().__init__()
            unknown = set(changes) - set(FIELDS)
            if unknown:
                raise TypeError(f"not cursor fields: {sorted(unknown)}")
            self.changes = changes

    def __init__(self, trace=None, **kwargs) -> None:
        super().__init__(**kwargs)
        self._trace = trace
        self._seen_steps = len(trace.steps) if trace is not None else 0

    # -- the one path in ------------------------------------------------------------------------
    @property
    def trace(self):
        return self._trace

    @trace.setter
    def trace(self, value) -> None:
        n_steps = len(value.steps) if value is not None else 0
        if value is not self._trace or n_steps != self._seen_steps:  # another trace, or it grew (live)
            self._trace, self._seen_steps = value, n_steps
            self.on_trace()
            self.refresh_view()

    def show(self, trace, cursor: Cursor) -> None:
        """Give the view the trace and the cursor (each only acted on when it changed)."""
        self.trace = trace
        self.cursor = cursor

    def watch_cursor(self, old: Cursor, new: Cursor) -> None:
        self.on_cursor(old, new)

    # -- hooks ------------------------------------------------------------------------------------
    def on_trace(self) -> None:
        """The trace object changed or grew (live): drop what was derived from the old one."""

    def on_cursor(self, old: Cursor, new: Cursor) -> None:
        """The cursor moved; the default redraws when a watched field changed."""
        if new.changed(old) & self.WATCHES:
            self.refresh_view()

    def refresh_view(self) -> None:
        """Redraw from `trace` and `cursor`."""
        self.refresh()

    def prefetch(self, step_index: int) -> None:
        """Warm the views cache with what this view would show at `step_index` (optional)."""

    # -- the one path out -------------------------------------------------------------------------
    def move(self, **changes) -> None:
        """Ask the app to move the cursor (clamped there)."""
        self.post_message(self.Moved(**changes))

    # -- errors: a failing view shows the error dialog, the debugger goes on -------------------------
    def render_lines(self, crop: Region) -> list[Strip]:
        try:
            return super().render_lines(crop)
        except Exception as exc:  # noqa: BLE001 - any failure of a view is reported, not fatal
            report_view_error(self, exc)
            line = Text(inert(f"{type(self).__name__} failed: {type(exc).__name__}: {exc}"), style="red")
            strips = [Strip(list(line.render(self.app.console))).crop_extend(0, crop.width, None)]
            return (strips + [Strip.blank(crop.width)] * crop.height)[: crop.height]

    async def _dispatch_message(self, message) -> None:
        try:
            await super()._dispatch_message(message)
        except Exception as exc:  # noqa: BLE001 - a handler's failure is reported, the view lives on
            report_view_error(self, exc)

    # -- helpers ----------------------------------------------------------------------------------
    @property
    def step_index(self) -> int:
        """The cursor's step, clamped to the steps the trace holds (0 without a trace)."""
        n = len(self._trace.steps) if self._trace is not None else 0
        return max(0, min(self.cursor.step, n - 1))


def report_view_error(node, exc: BaseException) -> None:
    """Show `exc` in the app's error dialog (once per distinct message) if the app can; else re-raise."""
    report = getattr(node.app, "report_error", None)
    if report is None:
        raise exc
    node.app.call_later(report, f"{type(node).__name__} failed", exc)
