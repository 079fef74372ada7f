"""A one-line question in a modal (used by go-to-step and write-trace).

Keys: `Enter` accepts, `Esc` cancels.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from rich.style import Style
from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import Input, Static

from stepscope.tui.screens.snippet import SnippetScreen


class PromptScreen(ModalScreen[str | None]):
    """Dismisses with the accepted text, or None when cancelled. `check(text)` returns an error
    message (shown under the field) or None when the text is acceptable.

    | key | action |
    |---|---|
    | `Enter` | accept |
    | `Esc` | cancel |
    | `Ctrl+T` | the field's text as a TransformerLens / nnsight snippet (dialogs given `snippet`) |
    """

    BINDINGS = [Binding("escape", "cancel", "Cancel"),
                Binding("ctrl+t", "snippet", "Snippet", show=False, tooltip="Show the field as a runnable snippet")]

    def __init__(
        self,
        title: str,
        value: str = "",
        placeholder: str = "",
        hint: str = "",
        check: Callable[[str], str | None] | None = None,
        choices: Sequence[tuple[str, str]] = (),
        snippet: Callable[[str], dict[str, str]] | None = None,
        **kwargs,
    ) -> None:
        super().__init__(**kwargs)
        self.snippet = snippet  # text -> {library: code} (ValueError: shown under the field)
        self.choices = list(choices)  # (label, text): a click on a label puts its text in the field
        self.title_text = title
        self.value = value
        self.placeholder = placeholder
        self.hint = hint
        self.check = check

    def compose(self) -> ComposeResult:
        with Vertical(id="prompt-box"):
            yield Static(Text(self.title_text, style="bold"), id="prompt-title")
            if self.choices:
                yield Static(self._choices_text(), id="prompt-choices")
            yield Input(value=self.value, placeholder=self.placeholder, id="prompt-input")
            yield Static(Text(self.hint, style="dim"), id="prompt-hint")
            yield Static(id="prompt-error")

    def on_mount(self) -> None:
        self.query_one(Input).focus()

    def _choices_text(self) -> Text:
        text = Text()
        for i, (label, _) in enumerate(self.choices):
            text.append("  " if i else "")
            text.append(f"[{label}]", style=Style(meta={"@click": f"screen.choose({i})"}))
        return text

    def action_choose(self, index: int) -> None:
        """Put choice `index`'s text in the field (a click on its label)."""
        field = self.query_one(Input)
        field.value = self.choices[index][1]
        field.cursor_position = len(field.value)
        field.focus()

    def on_input_submitted(self, event: Input.Submitted) -> None:
        event.stop()
        text = event.value.strip()
        error = self.check(text) if self.check else None
        if error:
            self.query_one("#prompt-error", Static).update(Text(error))
            return
        self.dismiss(text)

    def action_cancel(self) -> None:
        self.dismiss(None)

    def action_snippet(self) -> None:
        """The field's text as runnable snippets (a modal), when this dialog makes them."""
        if self.snippet is None:
            return
        text = self.query_one(Input).value.strip()
        try:
            snippets = self.snippet(text)
        except ValueError as exc:
            self.query_one("#prompt-error", Static).update(Text(str(exc)))
            return
        self.app.push_screen(SnippetScreen(text, snippets))


class GotoScreen(PromptScreen):
    """Go to step: a number 0..last (negative counts from the end)."""

    def __init__(self, n_steps: int, current: int, **kwargs) -> None:
        self.n_steps = n_steps
        super().__init__(
            "Go to step",
            value="",
            placeholder=f"0..{max(n_steps - 1, 0)}",
            hint=f"step number 0..{max(n_steps - 1, 0)} (now {current}; -1 is the last) · Enter go · Esc cancel",
            check=self._check,
            **kwargs,
        )

    def _check(self, text: str) -> str | None:
        try:
            value = int(text)
        except ValueError:
            return f"not a step number: {text!r}"
        if not -self.n_steps <= value < self.n_steps:
            return f"no step {value}: the trace has steps 0..{self.n_steps - 1}"
        return None
