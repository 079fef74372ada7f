"""The runs of this session or trace (the original and its branches), one per line; `Enter` or a
click opens the run (the path `B` takes).

Keys: `Enter` / click open the highlighted run · `Esc` close.
"""

from __future__ import annotations

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import OptionList, Static
from textual.widgets.option_list import Option

from stepscope.tracer.inert import inert
from stepscope.tui.views.branches import run_label


def run_line(item: dict, current: bool) -> Text:
    """One inert row: current mark, name, branch step, steps, what the branch changed."""
    steps = item.get("steps")
    return Text.assemble(("▶ " if current else "  ", "bold"), (f"{inert(item['name'] or '(original)', 40):<12}", "bold"),
                         (f"{steps if steps is not None else '?':>4} steps  ", "dim"), run_label(item))


class RunsScreen(ModalScreen[int | None]):
    """Dismisses with the index of the chosen run in `items`, or None.

    | key | action |
    |---|---|
    | `Enter` / click | open the run |
    | `Esc` | close |
    """

    DEFAULT_CSS = """
    RunsScreen { align: center middle; }
    #runs-box { width: 90; height: auto; max-height: 90%; border: round $primary; background: $surface; padding: 0 1; }
    #runs-title { height: 1; margin-bottom: 1; }
    #runs-list { height: auto; max-height: 16; }
    """
    BINDINGS = [Binding("escape", "close", "Close")]

    def __init__(self, items: list[dict], current: int, **kwargs) -> None:
        super().__init__(**kwargs)
        self.items, self.current = items, current

    def compose(self) -> ComposeResult:
        with Vertical(id="runs-box"):
            yield Static(Text(f"Runs ({len(self.items)}): the original and its branches", style="bold"), id="runs-title")
            yield OptionList(*(Option(run_line(item, i == self.current)) for i, item in enumerate(self.items)), id="runs-list")
            yield Static(Text("Enter or a click opens a run · Esc closes", style="dim"))

    def on_mount(self) -> None:
        olist = self.query_one(OptionList)
        olist.highlighted = self.current
        olist.focus()

    def on_option_list_option_selected(self, event: OptionList.OptionSelected) -> None:
        event.stop()
        self.dismiss(event.option_index)

    def action_close(self) -> None:
        self.dismiss(None)
