"""What the what-if panel reads: the recorded sampling settings, one knob press, the settings in
words (`tracer.whatif`). The lines are drawn by `tui.render.whatif`."""

from __future__ import annotations

from dataclasses import replace

from stepscope.tracer.whatif import WhatIfSettings


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
