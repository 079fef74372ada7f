"""Breakpoints screen: add, list and remove the conditions `c` (continue) stops at.

Type a spec and press Enter to add it (`text=Paris`, `id=7042`, `p<0.3`, `top1<0.5`,
`entropy>2.5`, `nan`, `step=5`); the list shows every breakpoint.

Keys: `Enter` add (in the field) · `Tab` move between field and list · `Del`/`d`/`x` remove the
highlighted breakpoint (in the list) · `Esc` close.
"""

from __future__ import annotations

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import Input, OptionList, Static
from textual.widgets.option_list import Option

from stepscope.tui.breakpoints import SYNTAX_HELP, BreakpointError, BreakpointSet


class BreakpointList(OptionList):
    """The breakpoints; `Del`, `d` or `x` removes the highlighted one.

    | key | action |
    |---|---|
    | `Del` `d` `x` | remove the highlighted breakpoint |
    """

    BINDINGS = [Binding("delete,d,x,backspace", "remove", "Remove breakpoint")]

    def action_remove(self) -> None:
        screen = self.screen
        if isinstance(screen, BreakpointsScreen) and self.highlighted is not None:
            screen.remove_breakpoint(self.highlighted)


class BreakpointsScreen(ModalScreen[None]):
    """Edits the app's `BreakpointSet` in place.

    | key | action |
    |---|---|
    | `Enter` (field) | add the breakpoint typed |
    | `Tab` | move between the field and the list |
    | `Del` `d` `x` (list) | remove the highlighted breakpoint |
    | `Esc` | close |
    """

    BINDINGS = [Binding("escape", "close", "Close")]

    def __init__(self, breakpoints: BreakpointSet, **kwargs) -> None:
        super().__init__(**kwargs)
        self.breakpoints = breakpoints

    def compose(self) -> ComposeResult:
        with Vertical(id="breakpoints-box"):
            yield Static(Text("Breakpoints (c continues until one fires)", style="bold"), id="breakpoints-title")
            yield BreakpointList(id="breakpoints-list")
            yield Input(placeholder="add a breakpoint, e.g. p<0.3", id="breakpoints-input")
            keys = "Enter adds · Tab to the list, Del/d removes · Esc closes"
            hint = Text(f"kinds: {SYNTAX_HELP}\n{keys}", style="dim")
            yield Static(hint, id="breakpoints-hint")
            yield Static(id="breakpoints-error")

    def on_mount(self) -> None:
        self._refresh_list()
        self.query_one(Input).focus()

    def _refresh_list(self, highlight: int | None = None) -> None:
        olist = self.query_one(BreakpointList)
        olist.clear_options()
        if not self.breakpoints:
            olist.add_option(Option(Text("no breakpoints", style="dim"), disabled=True))
            return
        olist.add_options(
            Option(Text.assemble((f"{i + 1:>2}  ", "bold"), bp.describe(), ("   " + bp.spec, "dim")))
            for i, bp in enumerate(self.breakpoints)
        )
        olist.highlighted = min(highlight or 0, len(self.breakpoints) - 1)

    def on_input_submitted(self, event: Input.Submitted) -> None:
        event.stop()
        error = self.query_one("#breakpoints-error", Static)
        spec = event.value
        if not spec.strip():
            return
        try:
            self.breakpoints.add(spec)
        except BreakpointError as exc:
            error.update(Text(str(exc)))
            return
        error.update("")
        event.input.value = ""
        self._refresh_list()

    def remove_breakpoint(self, index: int) -> None:
        if 0 <= index < len(self.breakpoints):
            self.breakpoints.remove(index)
            self._refresh_list(highlight=index)

    def action_close(self) -> None:
        self.dismiss(None)
