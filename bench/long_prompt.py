"""A long prompt within the default recording budget: `stepscope trace` on the embedded SmolLM2
with a 4,096-token prompt and 64 new tokens, against plain transformers `generate` on the same
model, prompt and token count; prints both peak RSS side by side, wall time, the trace's size
and what the budget policy left out.

    python bench/long_prompt.py [--tokens 4096] [--new 64] [--out DIR] [--keep]

Each side runs in its own subprocess (its peak RSS is its own, read by wait4), one after the
other. Plain `generate` loads the model through the same public loader as `stepscope trace`
(`stepscope.load_model("smollm2")`: same dtype, same device), encodes the prompt the same way
(raw text, no chat template) and decodes greedily with exactly as many new tokens, so the
difference between the peaks is what recording costs in memory.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time

from stepscope.tracer import load_trace

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

PLAIN = """
import sys, torch, stepscope
model, tokenizer = stepscope.load_model("smollm2")
prompt, new = sys.stdin.read(), int(sys.argv[1])
ids = torch.tensor([tokenizer(prompt, add_special_tokens=True)["input_ids"]], device=model.device)
with torch.no_grad():
    out = model.generate(ids, max_new_tokens=new, min_new_tokens=new, do_sample=False)
print(ids.shape[1], out.shape[1] - ids.shape[1])
"""


def prompt_of(n_tokens: int) -> str:
    """Plain English text of about n_tokens SmolLM2 tokens (the tracer reports the exact count)."""
    sentence = "The capital of France is Paris, and the river that runs through it is the Seine. "
    return sentence * (n_tokens // 19 + 1)  # 19 tokens per sentence: at least n_tokens


def measured(cmd: list[str], stdin: str | None = None) -> tuple[int, str, str, float, float]:
    """(exit status, stdout, stderr, wall seconds, peak RSS in GiB) of one subprocess: its own
    maximum resident set, from wait4 (not the running total over every child so far)."""
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        t0 = time.perf_counter()
        env = dict(os.environ, COLUMNS="400")  # the trace command's summary lines unwrapped
        proc = subprocess.Popen(cmd, cwd=ROOT, stdin=subprocess.PIPE, stdout=out, stderr=err, text=True, env=env)
        assert proc.stdin is not None
        proc.stdin.write(stdin or "")
        proc.stdin.close()
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)  # reaped here: Popen must not wait for it again
        wall = time.perf_counter() - t0
        out.seek(0)
        err.seek(0)
        return proc.returncode, out.read(), err.read(), wall, usage.ru_maxrss / 1024**2  # KiB -> GiB


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tokens", type=int, default=4096)
    ap.add_argument("--new", type=int, default=64)
    ap.add_argument("--out", default=None)
    ap.add_argument("--keep", action="store_true", help="keep the trace")
    args = ap.parse_args()
    prompt = prompt_of(args.tokens)
    rc, out_text, err, plain_wall, plain_peak = measured([sys.executable, "-c", PLAIN, str(args.new)], prompt)
    if rc:
        print(f"plain generate failed ({rc}):\n{err[-2000:]}")
        sys.exit(1)
    plain_prompt, plain_new = (int(v) for v in out_text.split())
    tmp = None if args.out else tempfile.mkdtemp(prefix="stepscope-long-")
    out = args.out or os.path.join(tmp, "trace")
    cmd = [sys.executable, "-m", "stepscope", "trace", "--prompt", prompt, "--no-chat",
           "--max-new-tokens", str(args.new), "--out", out]
    try:
        rc, _, err, wall, peak = measured(cmd)
        if rc:
            print(f"stepscope trace failed ({rc}):\n{err[-2000:]}")
            sys.exit(1)
        tr = load_trace(out)
        size = sum(os.path.getsize(os.path.join(out, f)) for f in os.listdir(out) if os.path.isfile(os.path.join(out, f)))
        step0 = tr.steps[0]
        omitted = step0.omitted
        print(f"prompt {tr.prompt_len} tokens + {len(tr.steps)} generated tokens of SmolLM2-135M "
              f"(plain generate: {plain_prompt} + {plain_new})")
        print(f"  {'':<18}{'peak RSS':>10}{'wall':>9}")
        print(f"  {'plain generate':<18}{plain_peak:>8.2f} GiB{plain_wall:>7.0f} s")
        print(f"  {'stepscope trace':<18}{peak:>8.2f} GiB{wall:>7.0f} s")
        print(f"  {'difference':<18}{peak - plain_peak:>+8.2f} GiB{wall - plain_wall:>+7.0f} s   (model load included in both)")
        print(f"  trace {size / 2**30:.2f} GiB (prefill step {step0.nbytes / 2**30:.2f} GiB)")
        for line in err.splitlines():
            if line.startswith(("budget", "estimated", "prompt ", "memory")):
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
