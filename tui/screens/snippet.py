"""A modal showing a runnable TransformerLens or nnsight snippet of what the debugger just did.

Keys: `Tab` switches the library, `Esc` or `q` closes.
"""

from __future__ import annotations

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical, VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Static

from stepscope.tracer import load_trace
from stepscope.tracer.inert import inert
from stepscope.tracer.snippets import TITLES, snippets_for_intervention


class SnippetScreen(ModalScreen[None]):
    """`snippets`: {library: code}; the first is shown first.

    | key | action |
    |---|---|
    | `Tab` | the other library |
    | `Esc` `q` | close |
    """

    BINDINGS = [
        Binding("tab", "switch", "Library", tooltip="Show the snippet for the other library"),
        Binding("escape,q", "close", "Close", tooltip="Close"),
    ]

    def __init__(self, title: str, snippets: dict[str, str], **kwargs) -> None:
        super().__init__(**kwargs)
        self.title_text = title
        self.snippets = dict(snippets)
        self.library = next(iter(self.snippets))

    def compose(self) -> ComposeResult:
        with Vertical(id="snippet-box"):
            yield Static(id="snippet-title")
            with VerticalScroll(id="snippet-scroll"):
                yield Static(id="snippet-code")
            yield Static(Text("Tab: the other library · Esc closes · the code runs as it is (pip install the library)",
                              style="dim"), id="snippet-hint")

    def on_mount(self) -> None:
        self._show()

    def _show(self) -> None:
        self.query_one("#snippet-title", Static).update(
            Text(f"{self.title_text} — {TITLES.get(self.library, self.library)}", style="bold"))
        self.query_one("#snippet-code", Static).update(Text(inert(self.snippets[self.library], 100_000, newlines=True)))

    def action_switch(self) -> None:
        names = list(self.snippets)
        self.library = names[(names.index(self.library) + 1) % len(names)]
        self._show()

    def action_close(self) -> None:
        self.dismiss(None)


def intervention_snippets(trace, step: int, spec: tuple, sources: dict) -> dict[str, str]:
    """{library: snippet} of an intervention of the `I` dialog (spec: (kind, args, only)) at `step`;
    `sources`: the other traces a patch reads, already loaded by the dialog's check (path -> Trace)."""
    source_ids = None
    if spec[0] == "patch":
        path = spec[1][3]
        source = sources.get(path) or load_trace(path)
        source_ids = [int(t["id"]) for t in source.tokens]
    return snippets_for_intervention(trace, step, spec, source_ids)
