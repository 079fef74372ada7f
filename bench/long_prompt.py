"""A long prompt within the default recording budget: `stepscope trace` on the embedded SmolLM2
with a 4,096-token prompt and 64 new tokens; prints wall time, peak RSS, the trace's size and
what the budget policy left out.

    python bench/long_prompt.py [--tokens 4096] [--new 64] [--out DIR] [--keep]
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time

from stepscope.tracer import load_trace

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def prompt_of(n_tokens: int) -> str:
    """Plain English text of about n_tokens SmolLM2 tokens (the tracer reports the exact count)."""
    sentence = "The capital of France is Paris, and the river that runs through it is the Seine. "
    return sentence * (n_tokens // 19 + 1)  # 19 tokens per sentence: at least n_tokens


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tokens", type=int, default=4096)
    ap.add_argument("--new", type=int, default=64)
    ap.add_argument("--out", default=None)
    ap.add_argument("--keep", action="store_true", help="keep the trace")
    args = ap.parse_args()
    tmp = None if args.out else tempfile.mkdtemp(prefix="stepscope-long-")
    out = args.out or os.path.join(tmp, "trace")
    cmd = [sys.executable, "-m", "stepscope", "trace", "--prompt", prompt_of(args.tokens), "--no-chat",
           "--max-new-tokens", str(args.new), "--out", out]
    t0 = time.perf_counter()
    res = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024**2
    try:
        print(res.stderr.strip().splitlines()[-3:] if res.returncode else "", file=sys.stderr)
        if res.returncode:
            print(f"stepscope trace failed ({res.returncode}):\n{res.stderr[-2000:]}")
            sys.exit(1)
        tr = load_trace(out)
        size = sum(os.path.getsize(os.path.join(out, f)) for f in os.listdir(out))
        step0 = tr.steps[0]
        omitted = step0.omitted
        print(f"prompt {tr.prompt_len} tokens + {len(tr.steps) - 1} decode steps of SmolLM2-135M: "
              f"{wall:.0f} s wall (model load included), peak RSS {peak:.1f} GiB, trace {size / 2**30:.2f} GiB "
              f"(prefill step {tr.steps[0].nbytes / 2**30:.2f} GiB)")
        for line in res.stderr.splitlines():
            if line.startswith(("budget", "estimated", "prompt ")):
                print("  " + line.strip())
        if omitted:
            name, info = next(iter(omitted.items()))
            print(f"  omitted: {len(omitted)} prefill maps, rows {info['rows']} of each (recomputable), e.g. {name}")
            t1 = time.perf_counter()
            rows = step0.attention_rows(0, "pattern", 0, 64)
            print(f"  recompute 64 omitted rows of layer 0's pattern {rows.shape}: {(time.perf_counter() - t1) * 1e3:.0f} ms")
    finally:
        if tmp and not args.keep:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
