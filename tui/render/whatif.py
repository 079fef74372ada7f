"""The what-if panel's lines: a step replayed under other sampling settings, beside what happened."""

from __future__ import annotations

from rich.text import Text

from stepscope.tracer.whatif import WhatIfSettings, replay, side_by_side
from stepscope.tui.render.columns import wrap_parts, wrap_texts
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


def whatif_lines(trace, step: int, settings: WhatIfSettings, width: int | None = None) -> list[Text]:
    """Header (settings, what would be chosen vs what was), stages, then candidates side by side; with
    a `width`, the header lines wrap between their parts (nothing is cut mid-word)."""
    s = trace.steps[step]
    w = replay(s, settings)
    happened = s.sampling
    parts = settings_text(settings).split(" · ")
    title = wrap_parts([f"what if: {parts[0]}", *parts[1:], *([] if w.exact else ["(from the stored candidates only)"])],
                       width or 10_000)
    chosen = wrap_texts([Text.assemble("would choose ", token(trace, w.chosen), f" p {w.chosen_prob:.3f}"),
                         Text.assemble("  happened: ", token(trace, int(s.token["id"])),
                                       f" p {float(happened.get('chosen_prob', 0.0)):.3f}")], width)
    recorded = settings_text(recorded_settings(trace)).split(" · ")
    recorded = wrap_parts([f"recorded: {recorded[0]}", *recorded[1:]], width or 10_000)
    kept = wrap_parts(["kept: " + " → ".join(f"{st['name']} {st['kept']}" for st in w.stages),
                       f"entropy {w.entropy:.2f} nats"], width or 10_000)
    lines = [
        *(Text(t, style="bold") for t in title), *chosen, *(Text(r, style="dim") for r in recorded),
        *(Text(k, style="dim") for k in kept),
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
