"""The tensor inspector's list: every recorded tensor of a step, one line each, with statistics
computed only for the lines on screen (line API)."""

from __future__ import annotations

from rich.style import Style
from rich.text import Text
from textual.actions import SkipAction
from textual.binding import Binding
from textual.geometry import Size
from textual.message import Message
from textual.reactive import reactive
from textual.scroll_view import ScrollView
from textual.strip import Strip

from stepscope.tui.render.columns import middle_ellipsis
from stepscope.tui.render.spark import spark_chars
from stepscope.tui.text import truncate
from stepscope.tui.views.name_filter import name_matches
from stepscope.tui.views.tensors import TensorInfo, format_number, tensor_infos, tensor_stats

NUM = 9
# (key, title, width), most important first: on a narrow pane columns drop from the END of this
# list (the histogram first, then ‖x‖, then min, ...); a column is shown whole or not at all
COLUMNS = [("shape", "shape", 14), ("dtype", "dtype", 8), ("nonfinite", "nan/inf", 7), ("mean", "mean", NUM),
           ("std", "std", NUM), ("max", "max", NUM), ("min", "min", NUM), ("norm", "‖x‖", NUM),
           ("hist", "histogram", 12)]
DISPLAY_ORDER = ["shape", "dtype", "min", "max", "mean", "std", "norm", "nonfinite", "hist"]
NAME_MIN = 20  # `blocks.0.attn.…rot_q`: long names are cut in the middle (distinct names stay distinct)


def layout(width: int, shape_width: int = 14, nonfinite: bool = False) -> tuple[int, list[tuple[str, str, int]]]:
    """(name column width, the other columns that fit whole), in display order. `shape_width`:
    the widest shape of the step; `nonfinite`: the step has NaN/inf somewhere (else no column)."""
    chosen, used = [], NAME_MIN
    for key, title, w in COLUMNS:
        if key == "nonfinite" and not nonfinite:
            continue
        w = max(w, shape_width) if key == "shape" else w
        if used + 1 + w > width:
            break
        chosen.append((key, title, w))
        used += 1 + w
    chosen.sort(key=lambda c: DISPLAY_ORDER.index(c[0]))
    return NAME_MIN + max(0, width - used), chosen


def _shape(shape) -> str:
    return "[" + ", ".join(map(str, shape)) + "]"


def _cell(text: str, width: int, right: bool = True) -> str:
    text = truncate(text, width)
    return text.rjust(width) if right else text.ljust(width)


class TensorList(ScrollView, can_focus=True, inherit_bindings=False):
    """Tensors of the step in forward order; the cursor row is the selected tensor."""

    BINDINGS = [
        Binding("up", "move(-1)", "Up", show=False),
        Binding("down", "move(1)", "Down", show=False),
        Binding("pageup", "page(-1)", "Page up", show=False),
        Binding("pagedown", "page(1)", "Page down", show=False),
        Binding("home", "first", "First", show=False),
        Binding("end", "last", "Last", show=False),
        Binding("enter", "browse", "Browse"),
        Binding("slash", "filter", "Filter", tooltip="Filter the tensors by name (words or a glob)"),
        Binding("n", "next_match(1)", "Next match", show=False, tooltip="Next tensor of the filter (wraps)"),
        Binding("N", "next_match(-1)", "Prev match", show=False, tooltip="Previous tensor of the filter (wraps)"),
        Binding("escape", "clear_filter", "Clear filter", show=False, tooltip="Clear the filter"),
    ]
    COMPONENT_CLASSES = {"tensor-list--cursor", "tensor-list--header", "tensor-list--nonfinite"}

    cursor: reactive[int] = reactive(0, repaint=False)

    class Highlighted(Message):
        """The cursor moved to a tensor."""

        def __init__(self, name: str) -> None:
            super().__init__()
            self.name = name

    class Browse(Message):
        """Enter on a tensor: open its slices."""

        def __init__(self, name: str) -> None:
            super().__init__()
            self.name = name

    class FilterAsked(Message):
        """`/` on the list: the screen asks for a filter (`filter_problem` checks one as it is typed)
        and hands it back with `set_filter`."""

        def __init__(self, tensor_list: TensorList) -> None:
            super().__init__()
            self.tensor_list = tensor_list

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self._trace = None
        self._step = 0
        self._shape_width = 14
        self._nonfinite = False
        self.infos: list[TensorInfo] = []  # the rows shown (those matching `name_filter`)
        self.all_infos: list[TensorInfo] = []
        self.name_filter = ""
        self._strips: dict[tuple, Strip] = {}  # (index, cursor?, focused?, width) -> rendered line
        self._strip_style = None  # the widget style the cached lines were drawn with

    # -- data -----------------------------------------------------------------------------------
    def show(self, trace, step_index: int, keep: str | None = None) -> None:
        """Load the step's tensor list (header only); keep the cursor on `keep` when recorded."""
        self._trace, self._step = trace, step_index
        self.all_infos = tensor_infos(trace, step_index) if trace is not None and len(trace.steps) else []
        self.infos = [i for i in self.all_infos if name_matches(i.name, self.name_filter)]
        self._shape_width = max([len(_shape(i.shape)) for i in self.infos] + [len("shape")])
        self._nonfinite = bool(self.infos) and bool(trace.steps[step_index].nonfinite)
        self._edited = set(getattr(trace.steps[step_index], "intervened", None) or []) if self.infos else set()
        names = [i.name for i in self.infos]
        self.virtual_size = Size(0, len(self.infos) + 1)
        self._strips.clear()
        target = names.index(keep) if keep in names else min(self.cursor, max(0, len(names) - 1))
        self.set_reactive(TensorList.cursor, -1)
        self.cursor = target
        self.refresh()

    @property
    def selected(self) -> TensorInfo | None:
        return self.infos[self.cursor] if 0 <= self.cursor < len(self.infos) else None

    def select_name(self, name: str) -> None:
        for i, info in enumerate(self.infos):
            if info.name == name:
                self.cursor = i
                return

    def validate_cursor(self, value: int) -> int:
        return min(max(0, value), max(0, len(self.infos) - 1)) if value >= 0 else value

    def _scroll_to_cursor(self) -> bool:
        """Scroll so the cursor row is visible; True when it scrolled (which redraws everything)."""
        if not self.size.height:  # not laid out yet: try again once it is
            self.call_after_refresh(self._scroll_to_cursor)
            return False
        height = max(1, self.size.height - 1)  # the first line is the header
        top = round(self.scroll_y)
        if self.cursor < top:
            self.scroll_to(y=self.cursor, animate=False)
        elif self.cursor >= top + height:
            self.scroll_to(y=self.cursor - height + 1, animate=False)
        else:
            return False
        return True

    def on_resize(self) -> None:
        self._scroll_to_cursor()

    def watch_cursor(self, old: int, new: int) -> None:
        if new < 0 or not self.infos:
            return
        if not self._scroll_to_cursor():  # only the two rows whose highlight changed (+1: the header)
            if 0 <= old < len(self.infos):
                self.refresh_line(old + 1)
            self.refresh_line(new + 1)
        self.post_message(self.Highlighted(self.infos[new].name))

    def on_click(self, event) -> None:
        """A click selects the row (the header does nothing)."""
        offset = event.get_content_offset(self)
        if offset is None or offset.y < 1:
            return
        index = offset.y - 1 + round(self.scroll_y)
        if index < len(self.infos):
            self.cursor = index

    # -- actions --------------------------------------------------------------------------------
    def action_move(self, delta: int) -> None:
        self.cursor += delta

    def action_page(self, direction: int) -> None:
        self.cursor += direction * max(1, self.size.height - 2)

    def action_first(self) -> None:
        self.cursor = 0

    def action_last(self) -> None:
        self.cursor = len(self.infos) - 1

    # -- `/` filter, n/N ---------------------------------------------------------------------------
    def set_filter(self, pattern: str) -> None:
        """Show only the tensors matching `pattern` (`tui.views.name_filter`); "" shows all."""
        keep = self.selected.name if self.selected is not None else None
        self.name_filter = pattern.strip()
        self.show(self._trace, self._step, keep)
        if self.infos and (keep is None or keep not in [i.name for i in self.infos]):
            self.cursor = 0

    def filter_problem(self, text: str) -> str | None:
        """Why `text` is no use as a filter (no tensor of the step matches it), or None."""
        if text and not any(name_matches(i.name, text) for i in self.all_infos):
            return f"no tensor of this step matches {text!r}"
        return None

    def action_filter(self) -> None:
        """Ask for a filter: the screen opens the prompt and calls `set_filter`."""
        self.post_message(self.FilterAsked(self))

    def action_next_match(self, delta: int) -> None:
        if not self.name_filter or not self.infos:
            raise SkipAction()  # no filter: n/N are the debugger's (next step)
        self.cursor = (self.cursor + delta) % len(self.infos)

    def action_clear_filter(self) -> None:
        if not self.name_filter:
            raise SkipAction()  # Esc goes on to the screen (leave the pane)
        self.set_filter("")

    def action_browse(self) -> None:
        if self.selected is not None:
            self.post_message(self.Browse(self.selected.name))

    # -- drawing --------------------------------------------------------------------------------
    def _row_text(self, info: TensorInfo, name_width: int, columns) -> Text:
        stats = tensor_stats(self._trace, self._step, info.name)
        values = {
            "shape": _shape(info.shape), "dtype": info.dtype,
            "min": format_number(stats.min, NUM), "max": format_number(stats.max, NUM),
            "mean": format_number(stats.mean, NUM), "std": format_number(stats.std, NUM),
            "norm": format_number(stats.norm, NUM), "nonfinite": str(stats.nonfinite) if stats.nonfinite else "",
            "hist": spark_chars(stats.hist.reshape(-1, 2).sum(axis=1) if stats.hist.size % 2 == 0 else stats.hist,
                                zero_blank=True),
        }
        if info.name in getattr(self, "_edited", ()):  # a branch's intervention edited it
            text = Text((middle_ellipsis(info.name, name_width - 2) + " ✎").ljust(name_width), style="bold magenta",
                        no_wrap=True, end="")
        else:
            text = Text(middle_ellipsis(info.name, name_width).ljust(name_width), no_wrap=True, end="")
        for key, _, width in columns:
            text.append(" ")
            style = self.get_component_rich_style("tensor-list--nonfinite") if key == "nonfinite" else ""
            text.append(_cell(values[key], width, right=key not in ("shape", "dtype", "hist")), style=style)
        return text

    def render_line(self, y: int) -> Strip:
        width = self.scrollable_content_region.width  # (the scrollbar is not ours to draw on)
        name_width, columns = layout(width, self._shape_width, self._nonfinite)
        if y == 0:
            title = f"tensor  /{self.name_filter}  {len(self.infos)} of {len(self.all_infos)} · n N" \
                if self.name_filter else "tensor"
            header = Text(_cell(title, name_width, right=False), no_wrap=True, end="")
            for key, title, w in columns:
                header.append(" " + _cell(title, w, right=key not in ("shape", "dtype", "hist")))
            header.stylize(self.get_component_rich_style("tensor-list--header"))
            return self._strip(header, width)
        index = y - 1 + round(self.scroll_y)
        if self._trace is None or index >= len(self.infos):
            return Strip.blank(width, self.rich_style)
        if self.rich_style != self._strip_style:  # theme or focus changed the background
            self._strips.clear()
            self._strip_style = self.rich_style
        key = (index, index == self.cursor, self.has_focus, width)
        strip = self._strips.get(key)
        if strip is None:
            text = self._row_text(self.infos[index], name_width, columns)
            if index == self.cursor:
                text.stylize(self.get_component_rich_style("tensor-list--cursor"))
            strip = self._strips[key] = self._strip(text, width)
        return strip

    def _strip(self, text: Text, width: int) -> Strip:
        text.truncate(width, pad=True)
        segments = list(text.render(self.app.console))
        return Strip(segments, width).apply_style(self.rich_style or Style())
