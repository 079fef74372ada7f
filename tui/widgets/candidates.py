"""Candidates pane: the tokens the chosen one was drawn from, and the ones the filters removed.

One row per candidate, by logit: 1-based rank, token, id, raw p, p after temperature (and top-k),
final p (renormalised after top-k/top-p/min-p: the status bar's number), cumulative p/T and a bar;
the chosen token is marked `▶`; a line marks the cut-off, with the removed tail greyed below it.
Above the table: the sampler settings, the chosen token, the entropy, the sampler pipeline
(raw → /T → top-k → top-p → min-p → chosen; greedy: no pipeline) and a legend of the columns.

Reads only the step's `sample.*` arrays (a few hundred numbers).

Keys (when focused): ↑/↓ PageUp/PageDown scroll.
"""

from __future__ import annotations

from rich.text import Text
from textual import events
from textual.binding import Binding
from textual.message import Message
from textual.reactive import reactive

from stepscope.tui.render.candidates import chosen_line
from stepscope.tui.text import fit
from stepscope.tui.views.candidates import STAGE_LABELS, CandidateRow, candidates
from stepscope.tui.widgets.common import fmt_num, fmt_prob, token_display
from stepscope.tui.widgets.pane import Pane

MAX_ROWS = 512  # rows scrollable; only the visible ones are built
LEGEND = ("raw p = softmax(logits) · p/T = after temperature and top-k · p = final, renormalised after "
          "top-k/top-p/min-p · cum = cumulative p/T")
SHORT_LEGEND = "p/T: after T, top-k · p: final, renormalised · cum: Σ p/T"
BAR_WIDTH = 10
_EIGHTHS = " ▏▎▍▌▋▊▉█"


def bar(p: float, width: int = BAR_WIDTH) -> str:
    """A horizontal bar of `width` cells for a probability, in eighth blocks."""
    p = min(max(float(p), 0.0), 1.0) if p == p else 0.0
    eighths = int(round(p * width * 8))
    full, part = divmod(eighths, 8)
    out = "█" * full + (_EIGHTHS[part] if part and full < width else "")
    return out.ljust(width)


class CandidatesPane(Pane, can_focus=True):
    """The sampling candidates of the current step. `trace` and `step` are set by the app.

    | key (focused) | action |
    |---|---|
    | `↑` `↓` | scroll one row |
    | `PgUp` `PgDn` | scroll a page |
    """

    DEFAULT_CSS = """
    CandidatesPane { text-wrap: nowrap; text-overflow: ellipsis; }
    """

    COMPONENT_CLASSES = {"candidates--chosen", "candidates--cutoff", "candidates--outside", "candidates--bar"}

    BINDINGS = [
        Binding("up", "scroll_rows(-1)", "Up", show=False, tooltip="Scroll the candidates up"),
        Binding("down", "scroll_rows(1)", "Down", show=False, tooltip="Scroll the candidates down"),
        Binding("pageup", "scroll_rows(-10)", "Page up", show=False, tooltip="Scroll a page up"),
        Binding("pagedown", "scroll_rows(10)", "Page down", show=False, tooltip="Scroll a page down"),
    ]

    PREFETCH_WHEN_HIDDEN = True
    """Cheap enough to prepare for the current step while another pane shows (a quick switch)."""

    WATCHES = frozenset({"step"})

    offset_rows: reactive[int] = reactive(0)
    """First candidate row shown (the settings and column header stay on top)."""

    HEADER_LINES = 5

    def __init__(self, trace=None, **kwargs) -> None:
        super().__init__(trace, **kwargs)
        self._n_rows = 0
        self._follow_chosen = True
        self._row_ids: dict[int, int] = {}  # line of the last render -> the token id of its row

    def refresh_view(self) -> None:
        self._follow_chosen = True  # the next render scrolls the chosen row into view
        self.refresh()

    def validate_offset_rows(self, value: int) -> int:
        visible = max(self.size.height - self.HEADER_LINES, 1)
        return max(0, min(int(value), max(self._n_rows - visible, 0)))

    def action_scroll_rows(self, delta: int) -> None:
        self.offset_rows += delta

    class Picked(Message):
        """A candidate was clicked: the alternative to explain (Why) or to force (F)."""

        def __init__(self, token_id: int) -> None:
            super().__init__()
            self.token_id = token_id

    def action_pick(self, token_id: int) -> None:
        self.post_message(self.Picked(token_id))

    def on_click(self, event: events.Click) -> None:
        """A click on a candidate's line picks it (rows are plain lines, not links: no underline)."""
        offset = event.get_content_offset(self)
        if offset is not None and offset.y in self._row_ids:
            event.stop()
            self.action_pick(self._row_ids[offset.y])

    def prefetch(self, step_index: int) -> None:
        """Compute (into the views cache) the candidates of `step_index`."""
        trace = self._trace
        if trace is not None and 0 <= step_index < len(trace.steps):
            candidates(trace, step_index, limit=MAX_ROWS)

    def render(self) -> Text:
        lines = self.render_candidates()
        return lines if isinstance(lines, Text) else Text("\n", no_wrap=True, overflow="ellipsis").join(lines)

    def render_candidates(self) -> Text | list[Text]:
        """The settings, stages and column header lines, then one line per candidate."""
        trace = self._trace
        if trace is None or not len(trace.steps):
            return Text("no step yet", style="dim")
        index = self.step_index
        data = candidates(trace, index, limit=MAX_ROWS)
        sampling = trace.steps[index].sampling or {}
        if data is None:
            return Text("no candidates recorded for this step", style="dim")
        style = self.get_component_rich_style
        settings = Text(data.settings, style="bold", no_wrap=True, overflow="ellipsis")
        chosen = chosen_line(trace, index)
        chosen.append(f" · entropy {fmt_num(data.entropy)} nats (raw {fmt_num(data.raw_entropy)})")
        if data.greedy:
            stages = Text("greedy: the largest logit is chosen; p = softmax(logits)", style="dim")
        else:
            stages = Text(
                "pipeline "
                + "→".join(
                    f"{STAGE_LABELS.get(st.get('name'), st.get('name'))} {st.get('kept')}"
                    for st in sampling.get("stages") or []
                )
                + "→chosen",
                style="dim",
            )
        legend = Text(LEGEND if len(LEGEND) < self.size.width else SHORT_LEGEND, style="dim", no_wrap=True,
                      overflow="ellipsis")
        chosen_style = style("candidates--chosen")
        outside_style = style("candidates--outside")
        bar_style = style("candidates--bar")
        cut = style("candidates--cutoff")
        # plain Text rows (a rich Table costs ~10x more to lay out): fixed columns, the token and the
        # bar share the rest; when narrow the bar goes first, then cum, then p/T
        width = max(self.size.width - 1, 24)
        columns = ["raw p", "p/T", "p", "cum"]
        room = width - 13 - 6 * len(columns)
        for drop in ("cum", "p/T"):
            if room >= 8:
                break
            columns.remove(drop)
            room += 6
        bar_width = max(0, min(BAR_WIDTH, room - 12))
        token_width = max(6, min(18, room - bar_width - (1 if bar_width else 0)))
        lines = [settings, chosen, stages, legend]
        self._row_ids = {}
        header = Text(f"  {'#':>3} " + fit("token", token_width) + f" {'id':>6}", style="bold")
        for name in columns:
            header.append(f" {name:>5}")
        lines.append(header)
        # the body: candidate rows and the cut-off line; only the visible window is built
        body: list[CandidateRow | None] = []
        for candidate in data.rows:
            body.append(candidate)
            if data.cutoff is not None and candidate.rank - 1 == data.cutoff:
                body.append(None)
        self._n_rows = len(body)
        visible = max(self.size.height - self.HEADER_LINES, 1)
        if self._follow_chosen:
            self._follow_chosen = False
            chosen_at = next((i for i, r in enumerate(body) if r is not None and r.chosen), 0)
            offset = max(0, chosen_at - visible + 2) if chosen_at >= visible else 0
            self.set_reactive(CandidatesPane.offset_rows, offset)
        start = max(0, min(self.offset_rows, len(body) - visible))
        for row in body[start : start + visible]:
            if row is None:
                label = f"─ cut-off ({data.cut_label}): removed below "
                lines.append(Text("  " + label + "─" * max(width - 2 - len(label), 0), style=cut,
                                  no_wrap=True, overflow="crop"))
                continue
            line = Text("▶ " if row.chosen else "  ", end="", no_wrap=True, overflow="crop")
            line.append(f"{row.rank:>3} ")
            token = token_display(row.text, row.special)
            token.truncate(token_width, overflow="ellipsis", pad=True)
            line.append_text(token)
            line.append(f" {row.id:>6}")
            values = {"raw p": row.raw_prob, "p/T": row.temp_prob, "p": row.prob, "cum": row.cumulative}
            for name in columns:
                line.append(f" {fmt_prob(values[name]):>5}")
            if bar_width:
                line.append(" ")
                line.append(bar(row.prob if row.kept else row.temp_prob, bar_width), style=bar_style)
            if row.chosen:
                line.stylize(chosen_style)
            elif not row.kept:
                line.stylize(outside_style)
            self._row_ids[len(lines)] = row.id  # a click on the line picks it (Why, F): on_click
            lines.append(line)
        return lines
