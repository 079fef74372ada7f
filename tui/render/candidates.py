"""The status bar's line about the chosen token of a step."""

from __future__ import annotations

from rich.text import Text

from stepscope.tui.text import display_token
from stepscope.tui.views.vocab import tok_text


def _prob(p) -> str:
    if not isinstance(p, (int, float)) or p != p:
        return "–"
    return f"{p:.3f}" if p >= 0.001 or p == 0 else f"{p:.1e}"


def chosen_line(trace, step_index: int) -> Text:
    """One line for the status bar: the chosen token, its 1-based rank by logit and its final
    sampling probability (the number in the Candidates table's `p` column), e.g.
    `chose ·Paris · rank 1 · p 0.773 (raw 0.702) · greedy (argmax)`."""
    step = trace.steps[step_index]
    sampling = step.sampling or {}
    token = step.token or {}
    line = Text("chose ", end="")
    line.append_text(display_token(tok_text(token), bool(token.get("special"))))
    rank = sampling.get("chosen_rank")
    rank_s = str(int(rank) + 1) if isinstance(rank, int) and not isinstance(rank, bool) else "?"
    line.append(f" · rank {rank_s} · p {_prob(sampling.get('chosen_prob'))}")
    raw = sampling.get("chosen_raw_prob")
    if raw is not None and not sampling.get("greedy"):
        line.append(f" (raw {_prob(raw)})", style="dim")
    if sampling.get("greedy"):
        line.append(" · greedy (argmax)", style="dim")
    return line
