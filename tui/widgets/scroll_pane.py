"""Base of the table-like panes: a vertical scroll around one Static redrawn from the trace."""

from __future__ import annotations

from rich.console import RenderableType
from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.reactive import reactive
from textual.widgets import Static


class ScrollPane(VerticalScroll, can_focus=True, inherit_bindings=False):
    """Holds `trace` and the reactives `step`, `layer`, `head`; subclasses build `content()`.

    Only vertical scrolling keys are bound, so `←`/`→` keep stepping through the trace.
    """

    BINDINGS = [
        Binding("up", "scroll_up", "Scroll up", show=False),
        Binding("down", "scroll_down", "Scroll down", show=False),
        Binding("pageup", "page_up", "Page up", show=False),
        Binding("pagedown", "page_down", "Page down", show=False),
        Binding("home", "scroll_home", "Top", show=False),
        Binding("end", "scroll_end", "Bottom", show=False),
    ]

    DEPENDS: frozenset[str] = frozenset({"step", "layer", "head"})  # reactives that change the content

    step: reactive[int] = reactive(0)
    layer: reactive[int] = reactive(0)
    head: reactive[int] = reactive(0)

    def __init__(self, trace=None, **kwargs) -> None:
        super().__init__(**kwargs)
        self._trace = trace

    def compose(self) -> ComposeResult:
        yield Static(classes="pane-body")

    def on_mount(self) -> None:
        self.update_content()

    @property
    def trace(self):
        return self._trace

    @trace.setter
    def trace(self, value) -> None:
        self._trace = value
        self.update_content()

    def _max(self, key: str) -> int:
        if self._trace is None:
            return 0
        if key == "step":
            return max(0, len(self._trace.steps) - 1)
        return max(0, int(self._trace.model[key]) - 1)

    def validate_step(self, value: int) -> int:
        return min(max(0, int(value)), self._max("step"))

    def validate_layer(self, value: int) -> int:
        return min(max(0, int(value)), self._max("n_layers"))

    def validate_head(self, value: int) -> int:
        return min(max(0, int(value)), self._max("n_heads"))

    def watch_step(self) -> None:
        if "step" in self.DEPENDS:
            self.update_content()

    def watch_layer(self) -> None:
        if "layer" in self.DEPENDS:
            self.update_content()

    def watch_head(self) -> None:
        if "head" in self.DEPENDS:
            self.update_content()

    @property
    def body(self) -> Static:
        return self.query_one(".pane-body", Static)

    def update_content(self) -> None:
        """Redraw from the current trace and selection (no-op until the body is composed)."""
        bodies = self.query(".pane-body")
        if not bodies:
            return
        body = bodies.first(Static)
        if self._trace is None or not len(self._trace.steps):
            body.update(Text("no trace", style="dim"))
            return
        body.update(self.content())

    def content(self) -> RenderableType:
        """What the pane shows for `trace` at `step` (and `layer`/`head` where they matter)."""
        raise NotImplementedError(f"{type(self).__name__} must define content()")
