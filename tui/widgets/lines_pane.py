"""Base of the text panes (logit lens, KV cache, model overview): lines of `Text` drawn with the
line API, so a redraw renders only the lines on screen and never triggers a layout pass."""

from __future__ import annotations

from rich.style import Style
from rich.text import Text
from textual.binding import Binding
from textual.geometry import Size
from textual.scroll_view import ScrollView
from textual.strip import Strip

from stepscope.tui.render.columns import wrap_parts
from stepscope.tui.widgets.pane import Pane


class LinesPane(Pane, ScrollView, can_focus=True, inherit_bindings=False):
    """A pane drawn as lines; a subclass builds `lines()` from `trace` and `cursor`. Every line is
    fitted to the width with an ellipsis (no horizontal scrolling: tables choose their columns).

    Only vertical scrolling keys are bound, so `←`/`→` keep stepping through the trace.
    """

    DEFAULT_CSS = """
    LinesPane {
        width: 1fr;
        height: 1fr;
        overflow-x: hidden;
        overflow-y: auto;
        scrollbar-size-vertical: 1;
    }
    """
    # (CSS is inherited along the first base only: Pane's, so ScrollView's rules are restated)

    BINDINGS = [
        Binding("up", "scroll_lines(-1)", "Scroll up", show=False, tooltip="Scroll up a line"),
        Binding("down", "scroll_lines(1)", "Scroll down", show=False, tooltip="Scroll down a line"),
        Binding("pageup", "scroll_pages(-1)", "Page up", show=False, tooltip="Scroll up a page"),
        Binding("pagedown", "scroll_pages(1)", "Page down", show=False, tooltip="Scroll down a page"),
        Binding("home", "scroll_to_end(0)", "Top", show=False, tooltip="Scroll to the top"),
        Binding("end", "scroll_to_end(1)", "Bottom", show=False, tooltip="Scroll to the bottom"),
    ]
    # Own actions: Textual's scroll actions skip (and the key falls through to the screen, e.g.
    # End = last step) when there is nothing to scroll; in a focused pane these keys only scroll.

    def action_scroll_lines(self, delta: int) -> None:
        self.scroll_to(y=self.scroll_y + delta, animate=False, immediate=True)

    def action_scroll_pages(self, delta: int) -> None:
        self.scroll_to(y=self.scroll_y + delta * max(self.size.height - 1, 1), animate=False, immediate=True)

    def action_scroll_to_end(self, bottom: int) -> None:
        self.scroll_to(y=self.max_scroll_y if bottom else 0, animate=False, immediate=True)

    def __init__(self, trace=None, **kwargs) -> None:
        super().__init__(**kwargs)
        self._trace = trace
        self._lines: list[Text] = []
        self._strips: dict[tuple[int, int], Strip] = {}  # (line index, width) -> rendered line (cleared on rebuild)
        self._strip_style: Style | None = None  # the widget style the cached lines were drawn with
        self._stale = True

    # -- state ------------------------------------------------------------------------------------
    def refresh_view(self) -> None:
        self.invalidate()

    def on_resize(self) -> None:
        self.invalidate()  # lines may be laid out for the width (`wrap_parts`)

    def wrap_parts(self, parts: list[str], sep: str = " · ", style: str = "") -> list[Text]:
        """`parts` joined by `sep` on as few lines as the pane's width allows, broken only between
        parts (a figure is never cut; a part wider than the pane flows on between its words)."""
        width = max(self.scrollable_content_region.width, 20)
        return [Text(x, style=style, no_wrap=True) for x in wrap_parts(parts, width, sep)]

    def invalidate(self) -> None:
        """The lines are rebuilt at the next draw."""
        self._stale = True
        self.refresh()

    # -- content ----------------------------------------------------------------------------------
    def lines(self) -> list[Text]:
        """What the pane shows for `trace` at `cursor` (only the `WATCHES` fields may matter)."""
        raise NotImplementedError(f"{type(self).__name__} must define lines()")

    @property
    def drawn_lines(self) -> list[Text]:
        """The current content (built if stale)."""
        self._rebuild()
        return self._lines

    @property
    def plain_lines(self) -> list[str]:
        """The current content as plain strings (built if stale)."""
        return [line.plain for line in self.drawn_lines]

    def _rebuild(self) -> None:
        if not self._stale:
            return
        self._stale = False
        self._strips.clear()
        if self._trace is None or not len(self._trace.steps):
            self._lines = [Text("no trace", style="dim")]
        else:
            self._lines = self.lines()
        self.virtual_size = Size(0, len(self._lines))

    def render_line(self, y: int) -> Strip:
        self._rebuild()
        scroll_y = self.scroll_offset.y
        index = y + scroll_y
        width = self.scrollable_content_region.width
        if index >= len(self._lines):
            return Strip.blank(width, self.rich_style)
        style = self.rich_style
        if style != self._strip_style:  # focus or theme changed the background
            self._strips.clear()
            self._strip_style = style
        strip = self._strips.get((index, width))
        if strip is None:
            line = self._lines[index]
            if line.cell_len > width:
                line = line.copy()
                line.truncate(width, overflow="ellipsis")
            segments = list(line.render(self.app.console))
            strip = self._strips[(index, width)] = Strip(segments).apply_style(style)
        return strip.crop_extend(0, width, style)
