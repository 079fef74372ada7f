"""The what-if panel's lines: a step replayed under other sampling settings, beside what happened."""

from __future__ import annotations

from rich.text import Text

from stepscope.tracer.whatif import WhatIfSettings, replay, side_by_side
from stepscope.tui.render.lines import click, token
from stepscope.tui.views.whatif import KNOBS, recorded_settings, settings_text

ROWS = 15


def controls() -> list[Text]:
    """The knobs as clickable buttons, each with its key: `temperature t[−] T[+] · …` (three short lines)."""
    lines = []
    for group in (KNOBS[:2], KNOBS[2:]):
        line = Text()
        for label, key, what in group:
            if line:
                line.append(" · ", style="dim")
            line.append(f"{label} ", style="dim")
            line.append(f"{key}[−]", style=click(f"knob('{what}', -1)"))
            line.append(" ")
            line.append(f"{key.upper()}[+]", style=click(f"knob('{what}', 1)"))
        lines.append(line)
    line = Text()
    line.append("g[greedy/sample]", style=click("toggle_sample"))
    line.append(" · ", style="dim")
    line.append("r[recorded]", style=click("recorded"))
    return lines + [line]


def whatif_lines(trace, step: int, settings: WhatIfSettings) -> list[Text]:
    """Header (settings, what would be chosen vs what was), stages, then candidates side by side."""
    s = trace.steps[step]
    w = replay(s, settings)
    happened = s.sampling
    lines = [
        Text(f"what if: {settings_text(settings)}" + ("" if w.exact else "  (from the stored candidates only)"), style="bold"),
        Text.assemble("would choose ", token(trace, w.chosen), f" p {w.chosen_prob:.3f}   happened: ",
                      token(trace, int(s.token["id"])), f" p {float(happened.get('chosen_prob', 0.0)):.3f}",
                      f" ({settings_text(recorded_settings(trace))})"),
        Text("kept: " + " → ".join(f"{st['name']} {st['kept']}" for st in w.stages) + f" · entropy {w.entropy:.2f}", style="dim"),
        *controls(),
        Text(" token            happened   what if", style="bold"),
    ]
    for tid, before, after in side_by_side(s, w, ROWS)[:ROWS]:
        style = "green" if after > before else ("red" if after < before else "")
        mark = "▶" if tid == w.chosen else " "
        shown = token(trace, tid)
        shown.truncate(16, pad=True)
        lines.append(Text.assemble(mark, shown, f" {before:8.3f}  ", (f"{after:8.3f}", style)))
    return lines
