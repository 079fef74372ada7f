"""The token strip: prompt and generated tokens as text, the current step highlighted.

Whitespace is visible (`·`, `↵`, `⇥`), special tokens distinct and control characters escaped
(`tui.text.display_token`); tokens holding part of a UTF-8 character show their bytes (`<0xC2>`)
until the tokens that complete it are there, then one character spans them (`½`). Each generated
token is shaded by the probability the sampler gave it (`sampling.chosen_prob`, five buckets
styled in app.tcss); the token the current step chose is highlighted and the token(s) it read
are underlined. Lines break between tokens, never inside one. Only a window of tokens around the
current step is laid out, so a 1,000-token trace costs what a short one does.

Mouse: a click on a token selects its query row in the attention map (the cursor's `query`).
"""

from __future__ import annotations

from rich.style import Style
from rich.text import Text
from textual import events

from stepscope.tui.text import has_partial_bytes, merge_partial
from stepscope.tui.views.branches import branch_point
from stepscope.tui.views.vocab import tok_text
from stepscope.tui.widgets.common import prob_bucket, token_display
from stepscope.tui.widgets.pane import Pane

MORE = "…"
LEGEND = ("token strip: the prompt, then each generated token shaded by the probability the sampler gave it "
          "(brightest p ≥ 0.8, then ≥ 0.5, ≥ 0.2, ≥ 0.05, dimmest < 0.05); the current step's token highlighted, "
          "the tokens it read underlined; ⑂ where a branch leaves its parent")


class TokenStrip(Pane):
    """Prompt + generated tokens around the cursor's step."""

    COMPONENT_CLASSES = {
        "token-strip--prompt",
        "token-strip--prompt-alt",
        "token-strip--p0",
        "token-strip--p1",
        "token-strip--p2",
        "token-strip--p3",
        "token-strip--p4",
        "token-strip--current",
        "token-strip--input",
        "token-strip--more",
    }

    WATCHES = frozenset({"step"})
    """(step i chose the token at position prompt_len + i)"""

    def __init__(self, trace=None, **kwargs) -> None:
        super().__init__(trace, **kwargs)
        # pieces are grouped only where drawn: a 200,000-token trace costs what a short one does
        self._group_at: dict[int, tuple[int, int, str]] = {}  # token index -> (first token, end token, text) of its piece
        self._pieces: dict[int, tuple[Text, int]] = {}  # first token of a piece -> (display, cells)
        self._texts: dict[int, str] = {}  # token index -> its display text (tok_text)
        self._partial: dict[int, bool] = {}  # token index -> whether its text holds unfinished bytes
        self._seen = 0
        self.hit_boxes: list[tuple[int, int, int, int]] = []  # (line, x0, x1, token) of the last drawing
        self.tooltip = LEGEND

    def on_trace(self) -> None:
        self._group_at, self._pieces, self._texts, self._partial, self._seen = {}, {}, {}, {}, 0
        self._branch_at = branch_point(self._trace) if self._trace is not None else None  # "⑂" before it

    def _text(self, i: int, tokens) -> str:
        hit = self._texts.get(i)
        if hit is None:
            hit = self._texts[i] = tok_text(tokens[i])
        return hit

    def _is_partial(self, i: int, tokens) -> bool:
        hit = self._partial.get(i)
        if hit is None:
            hit = self._partial[i] = has_partial_bytes(self._text(i, tokens))
        return hit

    def _boundary(self, i: int, tokens, step: int) -> int:
        """The nearest piece boundary from token boundary `i` in direction `step` (-1 or +1): a
        boundary that follows a token without unfinished bytes, or an end of the token list (pieces
        join only tokens that each hold unfinished bytes, so grouping from there is grouping from 0)."""
        n = len(tokens)
        while 0 < i < n and self._is_partial(i - 1, tokens):
            i += step
        return i

    def _sync(self, tokens) -> None:
        """Forget what more tokens may change: the pieces from the last boundary before the old end
        (new tokens may complete their character); everything when the list shrank."""
        n = len(tokens)
        if n == self._seen:
            return
        if n < self._seen:  # another trace behind the same object: start over
            self.on_trace()
        else:
            redo = self._boundary(self._seen, tokens, -1)
            self._group_at = {i: g for i, g in self._group_at.items() if g[1] <= redo}
            self._pieces = {i: p for i, p in self._pieces.items() if i < redo and self._group_at.get(i, (0, n + 1))[1] <= redo}
        self._seen = n

    def _group(self, i: int, tokens) -> tuple[int, int, str]:
        """The piece holding token `i`: tokens grouped (tui.text.merge_partial) between the piece
        boundaries around it, exactly as grouping the whole list would."""
        hit = self._group_at.get(i)
        if hit is None:
            a, b = self._boundary(i, tokens, -1), self._boundary(i + 1, tokens, +1)
            for start, end, text in merge_partial([self._text(j, tokens) for j in range(a, b)]):
                group = (a + start, a + end, text)
                for j in range(a + start, a + end):
                    self._group_at[j] = group
            hit = self._group_at[i]
        return hit

    def _piece(self, group: tuple[int, int, str], tokens) -> tuple[Text, int]:
        start, _, text = group
        hit = self._pieces.get(start)
        if hit is None:
            piece = token_display(text, bool(tokens[start].get("special")), alone=False)  # running text: `·`
            if start == getattr(self, "_branch_at", None):  # where this branch leaves its parent
                piece = Text.assemble(("⑂", "bold magenta"), piece)
            hit = self._pieces[start] = (piece, piece.cell_len)
        return hit

    def render(self) -> Text:
        trace = self._trace
        self.hit_boxes = []
        if trace is None:
            return Text("(no trace yet)", style="dim")
        tokens = trace.tokens
        n = len(tokens)
        if n == 0:
            return Text("(empty prompt)", style="dim")
        self._sync(tokens)
        prompt_len = trace.prompt_len
        n_steps = len(trace.steps)
        step = self.cursor.step
        current = prompt_len + step if n_steps else -1
        in_start, in_end = trace.steps[step].positions if 0 <= step < n_steps else (0, 0)
        width, height = max(self.content_size.width, 1), max(self.content_size.height, 1)
        anchor = self._group(min(max(current, 0), n - 1), tokens)

        # lay out pieces around the anchor, lines breaking between pieces, then keep `height` lines
        budget = width * height
        before: list[tuple[int, int, str]] = []  # pieces before the anchor, nearest first
        start, used = anchor[0], 0
        while start > 0 and used < budget:
            group = self._group(start - 1, tokens)
            before.append(group)
            used += self._piece(group, tokens)[1]
            start = group[0]
        after: list[tuple[int, int, str]] = []  # the anchor's piece and those after it
        end, used = anchor[0], 0
        while end < n and used < budget + width:
            group = self._group(end, tokens)
            after.append(group)
            used += self._piece(group, tokens)[1]
            end = group[1]
        lines: list[list[tuple[tuple[int, int, str] | None, Text, int]]] = [[]]  # per line: (piece or None for "…", display, cells)
        x = 0
        more = (None, Text(MORE), 1)
        items = ([more] if start > 0 else []) + [(g, *self._piece(g, tokens)) for g in [*reversed(before), *after]]
        items += [more] if end < n else []
        for item in items:
            cells = item[2]
            if x and x + cells > width:
                lines.append([])
                x = 0
            lines[-1].append(item)
            x += cells
        anchor_line = next(i for i, line in enumerate(lines) if any(g == anchor for g, _, _ in line))
        first = max(0, min(anchor_line - height // 2, len(lines) - height))
        shown = lines[first : first + height]

        style = self.get_component_rich_style
        prompt_styles = (style("token-strip--prompt"), style("token-strip--prompt-alt"))
        p_styles = [style(f"token-strip--p{i}") for i in range(5)]
        current_style = style("token-strip--current")
        input_style = style("token-strip--input")
        more_style = style("token-strip--more")
        steps_meta = trace.manifest.get("steps", [])  # indexed for the pieces drawn only

        out = Text(no_wrap=True, overflow="fold", end="")
        for y, line in enumerate(shown):
            if y:
                out.append("\n")
            x = 0
            for g, piece, cells in line:
                if g is None:
                    out.append(MORE, style=more_style)
                    x += 1
                    continue
                start, end, _ = g
                if end <= prompt_len:
                    base: Style = prompt_styles[start % 2]
                else:
                    entry_index = end - 1 - prompt_len
                    prob = None
                    if 0 <= entry_index < len(steps_meta):
                        prob = (steps_meta[entry_index].get("sampling") or {}).get("chosen_prob")
                    base = p_styles[prob_bucket(prob)]
                if start <= current < end:
                    base = base + current_style
                elif start < in_end and in_start < end:
                    base = base + input_style
                # the piece's own styles (dim whitespace, escapes, special) stay on top of the shading
                out.append_text(_under(piece, base))
                self.hit_boxes.append((y, x, x + cells, start))
                x += cells
        return out

    def on_click(self, event: events.Click) -> None:
        """A click on a token selects its query row (cursor.query = the token's position)."""
        offset = event.get_content_offset(self)
        if offset is None:
            return
        for line, x0, x1, token in self.hit_boxes:
            if line == offset.y and x0 <= offset.x < x1:
                event.stop()
                self.move(query=token, key=None)  # the heatmap picks the key it attends most
                return


def _under(piece: Text, base: Style) -> Text:
    """`piece` with `base` applied beneath its own spans."""
    result = Text(piece.plain, style=base, end="")
    if piece.style:
        result.stylize(piece.style, 0, len(result))
    for span in piece.spans:
        result.stylize(span.style, span.start, span.end)
    return result
