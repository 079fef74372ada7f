"""What the what-if panel shows: a step replayed under other sampling settings, beside what happened.
Torch-free (tracer/whatif.py)."""

from __future__ import annotations

from dataclasses import replace

from rich.text import Text

from stepscope.tracer.whatif import WhatIfSettings, replay, side_by_side
from stepscope.tui.views.attribution import click, token

ROWS = 15


def recorded_settings(trace) -> WhatIfSettings:
    """The settings the trace was generated with."""
    g = trace.generation
    return WhatIfSettings(bool(g.get("do_sample")), float(g.get("temperature") or 1.0), int(g.get("top_k") or 0),
                           float(g.get("top_p") or 1.0), float(g.get("min_p") or 0.0), int(g.get("seed") or 0))


def settings_text(s: WhatIfSettings) -> str:
    if not s.do_sample:
        return "greedy"
    return (f"sample T {s.temperature:g} · top-k {s.top_k or 'off'} · top-p {s.top_p:g} · "
            f"min-p {s.min_p:g} · seed {s.seed}")


def adjusted(s: WhatIfSettings, what: str, delta: int) -> WhatIfSettings:
    """One key press: temperature ±0.1, top-k ±1 (0 = off), top-p ±0.05, min-p ±0.02, seed ±1;
    any change but the seed turns sampling on; values stay valid."""
    if what == "temperature":
        return replace(s, do_sample=True, temperature=max(0.05, round(s.temperature + 0.1 * delta, 2)))
    if what == "top_k":
        return replace(s, do_sample=True, top_k=max(0, s.top_k + delta))
    if what == "top_p":
        return replace(s, do_sample=True, top_p=min(1.0, max(0.05, round(s.top_p + 0.05 * delta, 2))))
    if what == "min_p":
        return replace(s, do_sample=True, min_p=min(0.98, max(0.0, round(s.min_p + 0.02 * delta, 2))))
    if what == "seed":
        return replace(s, seed=max(0, s.seed + delta))
    raise ValueError(what)


KNOBS = [("temperature", "t", "temperature"), ("top-k", "k", "top_k"), ("top-p", "p", "top_p"),
         ("min-p", "m", "min_p"), ("seed", "n", "seed")]


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
