"""Status bar: where the debugger stands.

`stepscope │ model │ replay|live │ step 3/15 decode │ chose ·Paris · rank 1 · p 0.42 │ L 5 (0–29) H 2 (0–8) kv 0`
then the state of the session (computing, continuing, stopped at a breakpoint, finished).
The chosen token is shown with `tui.text.display_token` (inert).

Keys: none.
"""

from __future__ import annotations

from rich.text import Text
from textual.reactive import reactive

from stepscope.tracer.geometry import kv_head_of
from stepscope.tracer.inert import inert
from stepscope.tui.render.candidates import chosen_line
from stepscope.tui.render.columns import middle_ellipsis
from stepscope.tui.widgets.pane import Pane

SPINNER = "⠋⠙⠹⠸⠼⠴⠦⠧⠇⠏"
STATE = 8
"""The note's priority: when the line is too wide the lowest go first; step, then layer and head, stay."""
MIN_STATE = 12
"""Cells the note keeps (cut with an ellipsis) before it gives way."""


class StatusBar(Pane):
    """One line: the trace at the cursor, then `mode` and `state` (set by the app)."""

    COMPONENT_CLASSES = {"status-bar--title", "status-bar--key", "status-bar--state", "status-bar--busy"}

    mode: reactive[str] = reactive("replay")
    state: reactive[str] = reactive("")
    busy: reactive[bool] = reactive(False)
    spin: reactive[int] = reactive(0)

    def on_mount(self) -> None:
        self._timer = self.set_interval(0.12, self._tick, pause=True)

    def watch_busy(self, busy: bool) -> None:
        timer = getattr(self, "_timer", None)
        if timer is not None:
            timer.resume() if busy else timer.pause()

    def _tick(self) -> None:
        self.spin = (self.spin + 1) % len(SPINNER)

    def render(self) -> Text:
        pieces = self.pieces()
        return layout(pieces, self.size.width or 80)

    def pieces(self) -> dict[str, Text]:
        """The header's pieces in display order: title, model, mode, step, chosen, where, state."""
        style = self.get_component_rich_style
        trace = self._trace
        out: dict[str, Text] = {"title": Text(" stepscope ", style=style("status-bar--title"))}
        if trace is not None:
            model = trace.model
            weights = f" · {model['weights']}" if model.get("weights") else ""  # e.g. GGUF Q4_1, dequantised to float32
            out["model"] = Text(inert(str(model.get("name", "?")) + weights))
            out["mode"] = Text(self.mode, style=style("status-bar--key"))
            n_steps = len(trace.steps)
            if n_steps:
                step_index = self.step_index
                entry = trace.manifest["steps"][step_index]
                out["step"] = Text(f"step {step_index}/{n_steps - 1} {entry.get('kind', '')}".rstrip())
                out["chosen"] = chosen_line(trace, step_index)
            n_layers = int(model.get("n_layers") or 0)
            n_heads = int(model.get("n_heads") or 0)
            out["where"] = Text(f"L {self.cursor.layer} (0–{max(n_layers - 1, 0)}) H {self.cursor.head} "
                                f"(0–{max(n_heads - 1, 0)}) kv {kv_head_of(model, self.cursor.head)}")
        if self.state:
            state = Text()
            if self.busy:
                state.append(SPINNER[self.spin] + " ", style=style("status-bar--busy"))
            state.append(inert(self.state), style=style("status-bar--state"))
            out["state"] = state
        return out


SEP = " │ "


def _width(pieces: dict[str, Text]) -> int:
    return sum(p.cell_len for p in pieces.values()) + len(SEP) * max(len(pieces) - 1, 0) + 1


def _compact_where(where: Text) -> Text:
    """`L 5 (0–29) H 2 (0–8) kv 0` -> `L 5 H 2 kv 0`."""
    words = where.plain.split()
    return Text(f"L {words[1]} H {words[4]} kv {words[-1]}") if len(words) >= 8 else where


def _drop_last_hint(state: Text) -> Text | None:
    """The state without its last ` · ` part (hints such as `B switches runs` end a note); None when
    it has a single part."""
    at = state.plain.rfind(" · ")
    return state[:at] if at > 0 else None


def layout(pieces: dict[str, Text], width: int) -> Text:
    """One line of `pieces` fitted to `width`, degrading in this order until it fits:
    1. the chosen line loses its ` (raw …)` tail;  2. the state note loses its trailing ` · ` hints,
    one at a time;  3. the `stepscope` title goes;  4. `L 5 (0–29) H 2 (0–8) kv 0` becomes `L 5 H 2 kv 0`;
    5. the model name is shortened in the middle (to 16 cells);  6. the chosen line goes;
    7. the model name goes;  8. the state note is cut with an ellipsis (then goes).
    The mode (`live`/`replay`), the step and the layer and head are never dropped."""
    pieces = dict(pieces)

    def fits() -> bool:
        return _width(pieces) <= width

    if not fits() and "chosen" in pieces:
        pieces["chosen"] = _without_raw(pieces["chosen"])
    while not fits() and "state" in pieces and (shorter := _drop_last_hint(pieces["state"])) is not None:
        pieces["state"] = shorter
    if not fits():
        pieces.pop("title", None)
    if not fits() and "where" in pieces:
        pieces["where"] = _compact_where(pieces["where"])
    if not fits() and "model" in pieces and pieces["model"].cell_len > 16:
        pieces["model"] = Text(middle_ellipsis(pieces["model"].plain, 16))
    for name in ("chosen", "model"):
        if not fits():
            pieces.pop(name, None)
    if not fits() and "state" in pieces:
        room = width - (_width(pieces) - pieces["state"].cell_len)
        if room >= 8:
            pieces["state"].truncate(room, overflow="ellipsis")
        else:
            pieces.pop("state")
    out = Text(no_wrap=True, overflow="ellipsis", end="")
    if "title" not in pieces:
        out.append(" ")
    for i, piece in enumerate(pieces.values()):
        if i:
            out.append(" " if i == 1 and "title" in pieces else SEP)
        out.append_text(piece)
    return out


def _without_raw(chosen: Text) -> Text:
    """The chosen line without its ` (raw …)` / ` · greedy (argmax)` tail (the Candidates pane has them)."""
    cuts = [at for at in (chosen.plain.find(" (raw "), chosen.plain.find(" · greedy")) if at >= 0]
    return chosen[: min(cuts)] if cuts else chosen
