"""The token strip: prompt and generated tokens as text, the current step highlighted.

Whitespace is visible (`·`, `↵`, `⇥`), special tokens distinct and control characters escaped
(`tui.text.display_token`); each generated token is shaded by the probability the sampler gave
it (`sampling.chosen_prob`, five buckets styled in app.tcss); the token the current step chose
is highlighted and the token(s) it read are underlined. Only a window of tokens around the
current step is rendered, so a 1,000-token trace costs what a short one does.

Keys: none (the screen moves the step).
"""

from __future__ import annotations

from rich.style import Style
from rich.text import Text

from tui.widgets.common import prob_bucket, token_display
from tui.widgets.pane import Pane


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
        self._cache: dict[int, tuple[Text, int]] = {}

    def on_trace(self) -> None:
        self._cache.clear()

    def _piece(self, index: int, token: dict) -> tuple[Text, int]:
        hit = self._cache.get(index)
        if hit is None or hit[0].plain == "":
            text = token_display(token.get("text"), bool(token.get("special")))
            hit = self._cache[index] = (text, text.cell_len)
        return hit

    def render(self) -> Text:
        trace = self._trace
        if trace is None:
            return Text("(no trace yet)", style="dim")
        tokens = trace.tokens
        n = len(tokens)
        if n == 0:
            return Text("(empty prompt)", style="dim")
        prompt_len = trace.prompt_len
        n_steps = len(trace.steps)
        current = prompt_len + self.cursor.step if n_steps else -1
        in_start, in_end = (0, 0)
        if 0 <= self.cursor.step < n_steps:
            in_start, in_end = trace.steps[self.cursor.step].positions
        width = max(self.size.width, 1)
        capacity = max(width * max(self.size.height, 1) - 2, 8)
        anchor = min(max(current, 0), n - 1)

        # grow a window [lo, hi) around the anchor: half the room to the left, the rest right
        lo, hi, used = anchor, anchor + 1, self._piece(anchor, tokens[anchor])[1]
        while lo > 0 and used < capacity // 2:
            cells = self._piece(lo - 1, tokens[lo - 1])[1]
            if used + cells > capacity // 2:
                break
            lo -= 1
            used += cells
        while hi < n:
            cells = self._piece(hi, tokens[hi])[1]
            if used + cells > capacity - 1:
                break
            hi += 1
            used += cells
        while lo > 0:
            cells = self._piece(lo - 1, tokens[lo - 1])[1]
            if used + cells > capacity - 1:
                break
            lo -= 1
            used += cells

        style = self.get_component_rich_style
        prompt_styles = (style("token-strip--prompt"), style("token-strip--prompt-alt"))
        p_styles = [style(f"token-strip--p{i}") for i in range(5)]
        current_style = style("token-strip--current")
        input_style = style("token-strip--input")
        steps_meta = trace.manifest.get("steps", [])

        out = Text(no_wrap=False, overflow="fold", end="")
        if lo > 0:
            out.append("…", style=style("token-strip--more"))
        for i in range(lo, hi):
            text, _ = self._piece(i, tokens[i])
            if i < prompt_len:
                base: Style = prompt_styles[i % 2]
            else:
                entry_index = i - prompt_len
                prob = None
                if 0 <= entry_index < len(steps_meta):
                    prob = (steps_meta[entry_index].get("sampling") or {}).get("chosen_prob")
                base = p_styles[prob_bucket(prob)]
            if i == current:
                base = base + current_style
            elif in_start <= i < in_end:
                base = base + input_style
            # the piece's own styles (dim whitespace, escapes, special) stay on top of the shading
            out.append_text(_under(text, base))
        if hi < n:
            out.append("…", style=style("token-strip--more"))
        return out


def _under(piece: Text, base: Style) -> Text:
    """`piece` with `base` applied beneath its own spans."""
    result = Text(piece.plain, style=base, end="")
    if piece.style:
        result.stylize(piece.style, 0, len(result))
    for span in piece.spans:
        result.stylize(span.style, span.start, span.end)
    return result
