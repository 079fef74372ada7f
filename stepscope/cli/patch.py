"""`stepscope patch CLEAN CORRUPT`: where is it computed? An activation patching sweep (or its
attribution estimate) of the corrupted run with activations restored from the clean trace.

On a terminal it opens the debugger's Patching pane on the clean trace; otherwise (or with --json or
--text) it prints the grid. A result is saved beside the clean trace (CLEAN/patching/...) and reused.
"""

from __future__ import annotations

import json
import sys

from stepscope import seam
from stepscope.cli.common import EXIT_OK, check_terminal, run_app
from stepscope.tracer import load_trace
from stepscope.tracer.inert import inert
from stepscope.tracer.patch_format import METHODS, SITES, PatchingResult, check_pair, result_path, saved_result
from stepscope.tui.app import StepscopeApp
from stepscope.tui.views.patching import cell_label, column_labels


def add_parser(sub) -> None:
    p = sub.add_parser("patch", help="activation patching: which activations of CLEAN restore its answer in CORRUPT")
    p.add_argument("clean", help="trace directory of the clean prompt (e.g. \"The capital of France is\")")
    p.add_argument("corrupt", help="trace directory of the corrupted prompt, same model and prompt length")
    p.add_argument("--site", default="resid_pre", choices=list(SITES),
                   help="what is patched: the residual stream, attention or MLP output per layer x position, or each head at the last position")
    p.add_argument("--step", type=int, default=0, help="the step whose chosen tokens the metric compares (0 = the prefill)")
    p.add_argument("--method", default="patch", choices=list(METHODS),
                   help="patch: rerun per cell; attribution: first-order estimate from one forward and one backward")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.add_argument("--text", action="store_true", help="print the grid even on a terminal (default there: the Patching pane)")
    p.add_argument("--recompute", action="store_true", help="ignore a saved result and sweep again")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")


def compute(clean, corrupt, site: str, step: int, method: str, device: str = "auto", recompute: bool = False) -> PatchingResult:
    """The saved result of this sweep, else a new one (saved beside the clean trace when it can be)."""
    result = None if recompute else saved_result(clean.path, corrupt.path, site, method, step)
    if result is not None:
        return result
    model = seam.patching_model(clean, device=device)
    result = seam.patching_sweep(model, clean, corrupt, site=site, step=step, method=method)
    try:
        result.save(result_path(clean.path, corrupt.path, site, method, step))
    except OSError as exc:
        print(f"stepscope: note: the result is not saved ({inert(exc.strerror or str(exc))})", file=sys.stderr)
    return result


def grid_text(result: PatchingResult) -> str:
    """The grid as text: one row per layer, one column per position (or head)."""
    labels = column_labels(result)
    width = max(8, *(len(label) + 2 for label in labels))
    what = "position" if result.site != "head" else "head (last position)"
    lines = [
        f"{result.method} {result.site} per layer x {what}, step {result.step}: "
        f"logit difference {inert(repr(result.clean_token['text']))} - {inert(repr(result.corrupt_token['text']))} "
        f"restored (0 = corrupted {result.corrupt_metric:.3f}, 1 = clean {result.clean_metric:.3f})",
        "layer " + "".join(inert(label, width - 1).rjust(width) for label in labels),
    ]
    for layer in range(result.layers):
        lines.append(f"{layer:>5} " + "".join(f"{v:>{width}.3f}" for v in result.values[layer]))
    best = divmod(int(abs(result.values).argmax()), result.values.shape[1]) if result.values.size else None
    if best is not None:
        lines.append(f"largest: {cell_label(result, *best)} {result.cell(*best):.3f}")
    return "\n".join(lines)


def patch_app(clean, corrupt, site: str, step: int, method: str, device: str = "auto") -> StepscopeApp:
    """The debugger on the clean trace with the Patching pane on (clean, corrupt)."""
    app = StepscopeApp(trace=clean)
    app.main_screen.open_pane("patching", lambda pane: pane.set_pair(corrupt, site=site, step=step, method=method,
                                                                      device=device, run=True))
    return app


def run(args) -> int:
    clean, corrupt = load_trace(args.clean), load_trace(args.corrupt)
    check_pair(clean, corrupt, args.site, args.step)  # one line and exit 2 before any model is loaded
    if not (args.json or args.text) and sys.stdin.isatty() and sys.stdout.isatty():
        check_terminal()
        return run_app(patch_app(clean, corrupt, args.site, args.step, args.method, args.device))
    result = compute(clean, corrupt, args.site, args.step, args.method, args.device, args.recompute)
    if args.json:
        print(json.dumps(result.to_dict(), ensure_ascii=False))
    else:
        print(grid_text(result))
    return EXIT_OK
