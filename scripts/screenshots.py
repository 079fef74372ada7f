"""Render screenshots/*.svg of the debugger on a real trace (SmolLM2 on "The capital of France is").

    stepscope trace --no-chat --prompt "The capital of France is" --max-new-tokens 12 --out traces/paris
    stepscope trace --no-chat --prompt "The capital of Germany is" --max-new-tokens 12 --out traces/berlin
    python scripts/screenshots.py traces/paris [--compare traces/berlin] [--out screenshots]

Drives the app with Pilot (real key presses, no terminal needed) and saves one SVG per view:
the main screen at the prefill and at the step that chose " Paris", the candidates, the attention
heatmap (prefill map and stacked decode rows), the tensor inspector, the logit lens, the KV cache,
the layers × heads overview, the model overview, the attribution (why), the what-if replay,
the comparison of two traces and activation patching (with --compare), breakpoints, help, and the 80×24 layout.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# (file name, terminal size, keys pressed from a fresh app, what it shows)
SHOTS: list[tuple[str, tuple[int, int], list[str], str]] = [
    ("main-paris", (120, 36), ["PARIS"], "the step that chose ' Paris' (the prefill, greedy)"),
    ("main-decode", (120, 36), ["STEP:6", "j", "j", "l"], "a decode step: the forward over ' answer' chose ' is'"),
    ("candidates", (120, 36), ["PARIS", "1"], "top-p candidates with the cut-off and the sampler pipeline"),
    ("heatmap-prefill", (120, 36), ["j"] * 3 + ["l", "2"], "the prefill attention map with the causal mask"),
    ("heatmap-decode-stacked", (120, 36), ["end", "j", "j", "2", "tab", "s"],
     "decode rows of all steps stacked"),
    ("heatmap-cell", (120, 36), ["j"] * 3 + ["l", "2", "tab", "left", "left", "up"],
     "the cell cursor and its readout (query, key, weight, score, rank)"),
    ("tensors", (120, 36), ["PARIS", "3"], "every recorded tensor in forward order with its operation"),
    ("tensor-browser", (120, 36), ["PARIS", "j", "3", "tab", "down", "down", "down", "enter"],
     "a per-head tensor browsed as a 2-D slice with named axes"),
    ("logit-lens", (120, 36), ["PARIS", "4"], "the top tokens at every layer"),
    ("kv-cache", (120, 36), ["PARIS", "5"], "prefill vs decode and what the step appended"),
    ("heads-overview", (120, 36), ["PARIS", "6", "j", "j", "j", "l"], "layers × heads entropy grid"),
    ("model", (120, 36), ["7"], "architecture facts and parameter counts"),
    ("why", (120, 36), ["PARIS", "8", "WAIT", *["j"] * 23], "why ' Paris' and not ' the': layers, heads of layer 23"),
    ("whatif", (120, 36), ["PARIS", "9", "tab", "T", "T", "T", "T", "T", "P", "p", "p"],
     "the step replayed at temperature 1.5, top-p 0.9"),
    ("compare", (120, 36), ["COMPARE", "WAIT"], "France vs Germany: tokens, first differences, divergence per layer"),
    ("patching", (120, 44), ["PATCHING", "WAIT", *["j"] * 23, "tab", "right", "right", "right"],
     "France vs Germany: the residual stream restored per layer × position (activation patching)"),
    ("breakpoints", (120, 36), ["b", *"p<0.5", "enter", *"text=answer", "enter"], "the breakpoints screen"),
    ("help", (120, 44), ["question_mark"], "every key"),
    ("small-80x24", (80, 24), ["PARIS"], "the layout at the smallest supported size"),
    ("too-small", (70, 20), [], "the notice below 80×24"),
]


def paris_step(trace) -> int:
    """Index of the first step that chose a token reading "Paris" (else 0)."""
    for entry in trace.manifest["steps"]:
        if (entry.get("token") or {}).get("text", "").strip() == "Paris":
            return int(entry["index"])
    return 0


async def shoot(trace_path: str, out_dir: str, compare: str | None = None) -> list[str]:
    from stepscope.tracer import load_trace
    from stepscope.tui.app import StepscopeApp

    written = []
    for name, size, keys, _ in SHOTS:
        if ("COMPARE" in keys or "PATCHING" in keys) and compare is None:
            continue
        trace = load_trace(trace_path)
        app = StepscopeApp(trace=trace)
        async with app.run_test(size=size) as pilot:
            await pilot.pause()
            for key in keys:
                if key == "PARIS":
                    app.move(step=paris_step(trace))
                elif key.startswith("STEP:"):
                    app.move(step=int(key[5:]))
                elif key == "COMPARE":
                    app.main_screen.compare_with(load_trace(compare))
                elif key == "PATCHING":  # the sweep runs in a worker, or the saved one opens
                    app.main_screen.open_pane("patching", lambda pane: pane.set_pair(load_trace(compare), run=True))
                elif key == "WAIT":  # a pane's background work (W_U, the comparison)
                    await pilot.pause()
                    await app.workers.wait_for_complete()
                    await pilot.pause()
                else:
                    await pilot.press(key)
            await pilot.pause()
            path = app.save_screenshot(filename=f"{name}.svg", path=out_dir)
            written.append(path)
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("trace", help="a trace directory (e.g. SmolLM2 on 'The capital of France is')")
    parser.add_argument("--out", default="screenshots", help="output directory (default screenshots/)")
    parser.add_argument("--compare", default=None, help="a second trace of the same model for the compare shot")
    args = parser.parse_args(argv)
    os.makedirs(args.out, exist_ok=True)
    for path in asyncio.run(shoot(args.trace, args.out, args.compare)):
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
