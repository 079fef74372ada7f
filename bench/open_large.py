"""Opening a long trace: load_trace's time and memory, and `view`'s time to its first screen, on a
synthetic trace of 200,000 consistent steps (tests/support/large_trace.py; its step files are hard
links of one file, so the trace takes little disk).

    python bench/open_large.py                 # 200,000 steps
    python bench/open_large.py --steps 50000   # shorter
    python bench/open_large.py --trace DIR     # an existing trace

Times are wall clock on this machine: under CPU contention compare runs side by side.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import resource
import sys
import tempfile
import time
import tracemalloc

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from stepscope.tracer import load_trace  # noqa: E402
from tests.support.large_trace import build_large_trace  # noqa: E402


def open_figures(path: str) -> dict:
    """Seconds and bytes (tracemalloc peak, and the process' peak RSS) of one load_trace."""
    t0 = time.perf_counter()
    tr = load_trace(path)
    seconds = time.perf_counter() - t0
    tracemalloc.start()
    tr = load_trace(path)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return {"steps": len(tr.steps), "load_s": seconds, "traced_peak_mib": peak / 2**20,
            "max_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def first_screen_seconds(path: str) -> float:
    """From load_trace to the app's first drawn screen (`view`'s path, headless)."""
    from stepscope.tui.app import StepscopeApp

    t0 = time.perf_counter()
    app = StepscopeApp(trace=load_trace(path))

    async def main():
        async with app.run_test(size=(120, 40)) as pilot:
            await pilot.pause()
            return time.perf_counter() - t0

    return asyncio.run(main())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=200_000)
    ap.add_argument("--trace", help="measure this trace instead of a synthetic one")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        path = args.trace
        if path is None:
            t0 = time.perf_counter()
            path = build_large_trace(os.path.join(tmp, "t"), args.steps)
            print(f"made {args.steps} steps in {time.perf_counter() - t0:.1f} s")
        figures = open_figures(path)
        print(f"load_trace: {figures['steps']} steps in {figures['load_s']:.2f} s, "
              f"traced peak {figures['traced_peak_mib']:.0f} MiB, max RSS {figures['max_rss_mib']:.0f} MiB")
        print(f"view: first screen in {first_screen_seconds(path):.2f} s")


if __name__ == "__main__":
    main()
