"""Opening a long trace: load_trace's time and memory, and `view`'s time to its first screen, on a
synthetic trace of 200,000 consistent steps (tests/support/large_trace.py; its step files are hard
links of a few files, so the trace takes little disk).

    python bench/open_large.py                            # 200,000 steps, this checkout
    python bench/open_large.py --steps 50000              # shorter
    python bench/open_large.py --trace DIR                # an existing trace
    git worktree add /tmp/before main
    python bench/open_large.py --before /tmp/before       # that checkout measured beside this one

Each figure comes from a fresh interpreter: `open` is load_trace alone (wall and CPU seconds, the
growth of the peak resident size across it, and the CPU seconds of `json.loads` of the same log as
a yardstick of the machine's speed); `view` is load_trace then the app's first screen, headless at
120x40 (`view`'s path), split into its two parts. On a loaded machine compare CPU seconds, and
checkouts side by side (`--before` runs both in turn, twice, alternating).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from tests.support.large_trace import build_large_trace  # noqa: E402

OPEN = r"""
import gc, json, resource, sys, time
from stepscope.tracer import load_trace

def cpu():
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime

rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
c0, t0 = cpu(), time.perf_counter()
trace = load_trace(sys.argv[1])
figures = {"steps": len(trace.steps), "open_cpu": cpu() - c0, "open_wall": time.perf_counter() - t0,
           "open_mib": (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss0) / 1024}
del trace
lines = open(sys.argv[1] + "/steps.jsonl", "rb").read().splitlines()
gc.disable()
c0 = cpu()
for start in range(0, len(lines), 5000):
    json.loads(b"[" + b",".join(lines[start : start + 5000]) + b"]")
figures["json_cpu"] = cpu() - c0
print(json.dumps(figures))
"""

VIEW = r"""
import asyncio, json, resource, sys, time
t0 = time.perf_counter()
from stepscope.tracer import load_trace
from stepscope.tui.app import StepscopeApp
trace = load_trace(sys.argv[1])
t1 = time.perf_counter()
app = StepscopeApp(trace=trace)

async def main():
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.pause()
        return time.perf_counter()

t2 = asyncio.run(main())
print(json.dumps({"view_load": t1 - t0, "view_screen": t2 - t1, "view_total": t2 - t0,
                  "view_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def layout(source: str) -> str:
    """The folder to put on the path to import `stepscope` from the checkout `source`."""
    out = subprocess.run([sys.executable, "-m", "tests.support.layout"], cwd=source, capture_output=True, text=True, check=True)
    return out.stdout.strip()


def measure(trace: str, source: str | None) -> dict:
    env = dict(os.environ)
    if source is not None:
        env["PYTHONPATH"] = layout(source)
    figures: dict = {}
    for script in (OPEN, VIEW):
        out = subprocess.run([sys.executable, "-c", script, trace], capture_output=True, text=True, env=env,
                             cwd=os.path.dirname(os.path.abspath(trace)))  # (not a checkout: its `stepscope` folder is no package)
        if out.returncode:
            raise SystemExit(out.stderr)
        figures.update(json.loads(out.stdout))
    return figures


def row(label: str, f: dict) -> str:
    return (f"{label:<10} {f['open_wall']:6.2f} s {f['open_cpu']:6.2f} s {f['open_mib']:7.0f} MiB {f['json_cpu']:6.2f} s"
            f" {f['open_cpu'] / f['json_cpu']:5.1f}x {f['view_load']:6.2f} s {f['view_screen']:6.2f} s {f['view_total']:6.2f} s"
            f" {f['view_rss_mib']:7.0f} MiB")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=200_000)
    ap.add_argument("--trace", help="measure this trace instead of a synthetic one")
    ap.add_argument("--before", metavar="CHECKOUT", help="also measure this checkout (e.g. a worktree of main), alternating")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        path = args.trace
        if path is None:
            t0 = time.perf_counter()
            path = build_large_trace(os.path.join(tmp, "t"), args.steps)
            print(f"made {args.steps} steps in {time.perf_counter() - t0:.1f} s")
        with open("/proc/loadavg") as fh:
            print(f"machine: {os.cpu_count()} CPUs, load average {fh.read().split()[0]}")
        print(f"{'':<10} {'open':>8} {'open CPU':>8} {'open peak':>11} {'JSON CPU':>8} {'ratio':>6} "
              f"{'view: load':>8} {'screen':>8} {'total':>8} {'view RSS':>11}")
        runs = [("before", args.before), ("this", None)] * 2 if args.before else [("this", None)]
        for label, source in runs:
            print(row(label, measure(path, source)), flush=True)


if __name__ == "__main__":
    main()
