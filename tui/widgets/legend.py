"""Legend: a dim line (or a few) of ` · `-separated parts, wrapped to the widget's width between parts,
so a legend is never cut mid-word and never ends with a bare separator."""

from __future__ import annotations

from rich.text import Text
from textual.widget import Widget

from stepscope.tui.render.columns import wrap_parts


class Legend(Widget):
    """The parts of a legend on as few lines as the width allows (height: auto)."""

    DEFAULT_CSS = """
    Legend { height: auto; color: $text-muted; }
    """

    def __init__(self, parts: list[str], **kwargs) -> None:
        super().__init__(**kwargs)
        self.parts = list(parts)

    def render(self) -> Text:
        width = self.content_region.width or self.size.width or 80
        return Text("\n".join(wrap_parts(self.parts, width)), no_wrap=True)

    def get_content_height(self, container, viewport, width: int) -> int:
        return len(wrap_parts(self.parts, width))
