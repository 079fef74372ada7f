"""Fixed-width columns as plain `Text` lines: a fast stand-in for `rich.table.Table` in panes that
redraw on every keypress (no measuring pass, no markup: cells are `Text` or literal strings)."""

from __future__ import annotations

from collections.abc import Sequence

from rich.cells import cell_len
from rich.style import Style
from rich.text import Text

Cell = Text | str


def _text(cell: Cell) -> Text:
    return cell if isinstance(cell, Text) else Text(str(cell))


def columns(header: list[str], rows: Sequence[Sequence[Cell]], justify: str = "", gap: int = 2,
            header_style: str | Style = "bold dim", max_width: int | None = None) -> list[Text]:
    """Header line then one line per row. `justify`: one letter per column, "l" or "r" (default
    "l" for the first column, "r" for the rest). A cell wider than `max_width` is cut with "…"."""
    n = len(header)
    justify = justify or "l" + "r" * (n - 1)
    cells = [[_text(c) for c in row] for row in rows]
    if max_width is not None:
        for row in cells:
            for c in row:
                if c.cell_len > max_width:
                    c.truncate(max_width, overflow="ellipsis")
    widths = [max([cell_len(header[i])] + [row[i].cell_len for row in cells if i < len(row)]) for i in range(n)]
    sep = " " * gap

    def line(row: list[Text]) -> Text:
        out = Text(no_wrap=True, overflow="ellipsis", end="")
        for i in range(n):
            cell = row[i] if i < len(row) else Text("")
            pad = " " * (widths[i] - cell.cell_len)
            if i:
                out.append(sep)
            if justify[i] == "r":
                out.append(pad)
                out.append_text(cell)
            else:
                out.append_text(cell)
                if i < n - 1:
                    out.append(pad)
        return out

    head = line([Text(h) for h in header])
    head.stylize(header_style)
    return [head] + [line(row) for row in cells]


def middle_ellipsis(text: str, width: int) -> str:
    """`text` in at most `width` cells, cut in the middle so that the end stays: a dotted name
    keeps its head up to the last dot (`blocks.0.attn.…rot_q`), so distinct names stay distinct."""
    if cell_len(text) <= width:
        return text
    if width <= 1:
        return "…"[:width]
    room = width - 1
    dot = text.rfind(".")
    if 0 < dot + 1 <= room - 4:  # the dotted head fits with at least 4 cells of the tail
        head = text[: dot + 1]
    else:
        head = text[: room - room // 2]
    tail_room = room - cell_len(head)
    tail = ""
    for ch in reversed(text):
        if cell_len(tail) + cell_len(ch) > tail_room:
            break
        tail = ch + tail
    return head + "…" + tail


def wrap_parts(parts: list[str], width: int, sep: str = " · ") -> list[str]:
    """`parts` joined by `sep` on as few lines as `width` allows, broken only between parts (a part
    is never cut, and no line ends with a bare separator); a part wider than `width` is broken
    between its words."""
    width = max(width, 8)
    lines, line = [], ""
    for part in parts:
        if cell_len(part) > width:  # too long for any line: its words flow on
            words = part.split(" ")
        else:
            words = [part]
        for i, word in enumerate(words):
            glue = sep if i == 0 else " "
            if line and cell_len(line) + cell_len(glue) + cell_len(word) > width:
                lines.append(line)
                line = word
            else:
                line = f"{line}{glue}{word}" if line else word
    return lines + [line] if line else lines


def wrap_texts(parts: list[Text], width: int | None, sep: str = " ") -> list[Text]:
    """Styled `parts` joined by `sep` on as few lines as `width` allows (None: one line), broken only
    between parts, so a figure is never cut off its label."""
    lines: list[Text] = []
    line = Text()
    for part in parts:
        if width is not None and line.cell_len and line.cell_len + len(sep) + part.cell_len > width:
            lines.append(line)
            line = part.copy()
        else:
            if line.cell_len:
                line.append(sep)
            line.append_text(part)
    return lines + [line]
