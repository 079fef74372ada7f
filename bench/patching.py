"""Activation patching on the embedded SmolLM2: the cached, batched sweep vs a naive rerun per cell,
and attribution patching against both, side by side in one run.

Records the demo pair ("The capital of France is" / "The capital of Germany is", the residual
stream, attention and MLP outputs and head outputs only) unless given, then for each site times:
- the sweep (tracer/patching.py: the corrupted prefix [0, p) once with a KV cache, each position's
  cells one batched forward of the suffix);
- the naive sweep (the whole prompt rerun once per cell), and checks both give the same grid;
- attribution patching (one forward, one backward), its correlation with real patching over all cells.

    python bench/patching.py [--clean DIR --corrupt DIR] [--sites resid_pre,attn_out,mlp_out,head] [--repeat 1]
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

PROMPTS = ("The capital of France is", "The capital of Germany is")
RECORD = ["blocks.*.hook_resid_pre", "blocks.*.hook_attn_out", "blocks.*.hook_mlp_out", "blocks.*.attn.hook_z", "logits"]


def record_pair(model, tokenizer, name: str, source: str) -> tuple[str, str]:
    from stepscope.tracer.session import GenerationSettings, LiveSession

    root = tempfile.mkdtemp(prefix="stepscope-patching-")
    out = []
    for label, prompt in zip(("clean", "corrupt"), PROMPTS):
        path = os.path.join(root, label)
        s = LiveSession(model, tokenizer, prompt, GenerationSettings(max_new_tokens=1, chat=False, logit_lens=False),
                        out=path, record=RECORD, name=name, source=source)
        s.run()
        s.close()
        out.append(path)
    return out[0], out[1]


def best(fn, repeat: int):
    times, value = [], None
    for _ in range(repeat):
        t0 = time.perf_counter()
        value = fn()
        times.append(time.perf_counter() - t0)
    return min(times), value


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--clean", default=None)
    ap.add_argument("--corrupt", default=None)
    ap.add_argument("--sites", default="resid_pre,attn_out,mlp_out,head")
    ap.add_argument("--repeat", type=int, default=1)
    args = ap.parse_args()
    import numpy as np
    import torch

    from stepscope.tracer import load_trace
    from stepscope.tracer.loading import load_model
    from stepscope.tracer.patch_format import correlation
    from stepscope.tracer.patching import sweep

    loaded = load_model(None, device="cpu")
    model = loaded.model
    if args.clean and args.corrupt:
        clean_dir, corrupt_dir = args.clean, args.corrupt
    else:
        clean_dir, corrupt_dir = record_pair(model, loaded.tokenizer, loaded.name, loaded.source)
    clean, corrupt = load_trace(clean_dir), load_trace(corrupt_dir)
    cpus = os.cpu_count()
    print(f"{loaded.name} on {platform.processor() or platform.machine()}, {cpus} CPU cores, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads")
    print(f"clean {PROMPTS[0]!r} vs corrupted {PROMPTS[1]!r}: {clean.prompt_len} positions, "
          f"{clean.model['n_layers']} layers, {clean.model['n_heads']} heads")
    print(f"{'site':<10} {'cells':>5} {'sweep s':>8} {'fwd':>4} {'naive s':>8} {'fwd':>4} {'speedup':>8} "
          f"{'attrib s':>9} {'vs sweep':>9} {'corr':>6} {'max |diff|':>10}")
    for site in args.sites.split(","):
        fast_t, fast = best(lambda site=site: sweep(model, clean, corrupt, site=site), args.repeat)
        naive_t, naive = best(lambda site=site: sweep(model, clean, corrupt, site=site, naive=True), args.repeat)
        attr_t, attr = best(lambda site=site: sweep(model, clean, corrupt, site=site, method="attribution"), args.repeat)
        diff = float(np.nanmax(np.abs(fast.values - naive.values)))
        print(f"{site:<10} {fast.values.size:>5} {fast_t:>8.2f} {fast.extra['forwards']:>4} {naive_t:>8.2f} "
              f"{naive.extra['forwards']:>4} {naive_t / fast_t:>7.1f}x {attr_t:>9.2f} {fast_t / attr_t:>8.1f}x "
              f"{correlation(fast, attr):>6.3f} {diff:>10.1e}")
        if site == "resid_pre":
            best_cell = np.unravel_index(int(np.abs(fast.values).argmax()), fast.values.shape)
            print(f"           largest cell: layer {best_cell[0]}, position {best_cell[1]} "
                  f"{clean.tokens[best_cell[1]]['text']!r} = {fast.values[best_cell]:.3f}")


if __name__ == "__main__":
    main()
