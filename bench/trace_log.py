"""Trace format cost: per-step write cost at step 10 vs step 10,000, and the open time of a
10,000-step trace, with synthetic steps of SmolLM2-135M's decode shapes (30 layers).

    python bench/trace_log.py                    # the measurements (a few minutes on 2 CPUs)
    python bench/trace_log.py --steps 2000       # shorter
    python bench/trace_log.py --light            # tiny arrays: the format's own cost only (seconds)
    python bench/trace_log.py --make DIR         # only write a 10,000-step synthetic trace to DIR
                                                 # (e.g. for bench/tui_latency.py --trace DIR)

`make_trace(path, n_steps)` is the reusable generator. Figures are measured side by side in one
run; under CPU contention compare the ratios, not the absolute times.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from stepscope.tracer import load_trace  # noqa: E402
from stepscope.tracer.names import block_name  # noqa: E402
from stepscope.tracer.trace_format import unstamp  # noqa: E402
from stepscope.tracer.writer import TraceWriter  # noqa: E402

N_LAYERS, D, H, KV, DH, DM, VOCAB, PROMPT = 30, 576, 9, 3, 64, 1536, 49152, 5


def _manifest(n_steps: int) -> dict:
    params = {"embedding": VOCAB * D, "attention": N_LAYERS * 4 * D * D, "mlp": N_LAYERS * 3 * D * DM,
              "norms": (2 * N_LAYERS + 1) * D, "lm_head": 0}
    params["total"] = sum(params.values())
    return {
        "schema": "stepscope.trace", "schema_version": 2, "created": "2026-01-01T00:00:00Z",
        "model": {"name": "synthetic-smollm2-shapes", "source": "synthetic", "family": "llama",
                  "architecture": "LlamaForCausalLM", "n_layers": N_LAYERS, "d_model": D, "n_heads": H,
                  "n_kv_heads": KV, "d_head": DH, "d_mlp": DM, "vocab_size": VOCAB, "n_ctx": 1 << 20,
                  "positional": "rotary", "norm": "rmsnorm", "act": "silu", "gated_mlp": True,
                  "parallel_attn_mlp": False, "sliding_window": None, "n_experts": None, "params": params,
                  "config": {}, "not_applicable": [], "missing_names": []},
        "tokenizer": {"name": "synthetic", "vocab_size": VOCAB},
        "prompt": "The capital of France is", "chat": False, "prompt_len": PROMPT,
        "generation": {"do_sample": False, "temperature": 1.0, "top_k": 0, "top_p": 1.0, "min_p": 0.0,
                       "seed": 0, "max_new_tokens": n_steps, "logit_lens_k": 10},
        "dtype": {"model": "float32", "stored": "float32"}, "device": "cpu", "record": ["*"],
        "tokens": [{"id": 100 + i, "text": w, "special": False, "position": i}
                   for i, w in enumerate(["The", " capital", " of", " France", " is"])],
        "finished": False, "stop_reason": None,
    }


def step_arrays(rng: np.random.Generator, t: int, s: int, full: bool = False) -> dict[str, np.ndarray]:
    """A step's arrays at SmolLM2's shapes. Not `full`: per-position tensors only (no attention
    maps, no logits), so the file size is the same at every step and the cost measured is the
    format's; `full`: everything a real trace holds."""
    f32 = np.float32
    arrays = {"hook_embed": rng.normal(size=(t, D)).astype(f32)}
    for layer in range(N_LAYERS):
        p = lambda n, layer=layer: block_name(layer, n)  # noqa: E731
        for n in ("ln1.hook_normalized", "hook_attn_out", "hook_resid_mid", "ln2.hook_normalized", "hook_mlp_out", "hook_resid_post"):
            arrays[p(n)] = rng.normal(size=(t, D)).astype(f32)  # [T, d_model]
        arrays[p("hook_resid_pre")] = arrays[block_name(layer - 1, "hook_resid_post")] if layer else arrays["hook_embed"]
        for n in ("mlp.hook_pre", "mlp.hook_pre_linear", "mlp.hook_post"):
            arrays[p(n)] = rng.normal(size=(t, DM)).astype(f32)  # [T, d_mlp]
        for n in ("attn.hook_q", "attn.hook_rot_q", "attn.hook_z"):
            arrays[p(n)] = rng.normal(size=(t, H, DH)).astype(f32)  # [T, n_heads, d_head]
        for n in ("attn.hook_k", "attn.hook_rot_k", "attn.hook_v"):
            arrays[p(n)] = rng.normal(size=(t, KV, DH)).astype(f32)  # [T, n_kv_heads, d_head]
        if full:
            pattern = rng.random((H, t, s)).astype(f32)  # [n_heads, T, S]
            arrays[p("attn.hook_pattern")] = pattern / pattern.sum(-1, keepdims=True)
            arrays[p("attn.hook_attn_scores")] = np.log(arrays[p("attn.hook_pattern")])
    if full:
        arrays["logits"] = rng.normal(size=(t, VOCAB)).astype(f32)  # [T, vocab]
    arrays["sample.candidate_ids"] = np.arange(20, dtype=np.int64)
    arrays["sample.candidate_probs"] = np.full(20, 0.05, f32)
    return arrays


def _entry(index: int) -> tuple[dict, dict]:
    start, end = (0, PROMPT) if index == 0 else (PROMPT + index - 1, PROMPT + index)
    token = {"id": 100 + index % 50, "text": f" w{index % 50}", "special": False, "position": end}
    sampling = {"greedy": True, "chosen_id": token["id"], "chosen_rank": 0, "chosen_prob": 0.5, "top1_id": token["id"],
                "top1_prob": 0.5, "entropy": 1.0, "stages": [{"name": "raw", "kept": VOCAB}]}
    return {"index": index, "kind": "prefill" if index == 0 else "decode", "positions": [start, end],
            "token": token, "sampling": sampling, "seconds": 0.03}, token


def make_trace(path: str, n_steps: int = 10_000, full: bool = False, timings: list | None = None, light: bool = False) -> str:
    """Write a synthetic trace of 1 prefill + n_steps - 1 decode steps; `timings` gets each add_step's
    seconds; `light`: one [1, d_model] array per step (the format's own cost, no bulk data)."""
    writer = TraceWriter(path, _manifest(n_steps), background=False)
    rng = np.random.default_rng(0)
    decode = {"hook_embed": rng.normal(size=(1, D)).astype(np.float32)} if light else step_arrays(rng, 1, PROMPT + 1, full)  # reused: the cost measured is the writer's, not numpy's
    for index in range(n_steps):
        arrays = ({"hook_embed": rng.normal(size=(PROMPT, D)).astype(np.float32)} if light else step_arrays(rng, PROMPT, PROMPT, full)) if index == 0 else (step_arrays(rng, 1, PROMPT + index, True) if full else decode)
        entry, token = _entry(index)
        t0 = time.perf_counter()
        writer.add_step(arrays, entry, token)
        if timings is not None:
            timings.append(time.perf_counter() - t0)
    writer.close(finished=True, stop_reason="max_new_tokens")
    return path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=10_000)
    ap.add_argument("--make", metavar="DIR", help="only write the synthetic trace to DIR")
    ap.add_argument("--light", action="store_true", help="one small array per step: the format's own cost")
    args = ap.parse_args()
    if args.make:
        make_trace(args.make, args.steps)
        print(f"wrote {args.steps} steps to {args.make}")
        return
    tmp = tempfile.mkdtemp(prefix="stepscope-bench-log-")
    try:
        path = os.path.join(tmp, "trace")
        timings: list[float] = []
        t0 = time.perf_counter()
        make_trace(path, args.steps, timings=timings, light=args.light)
        total = time.perf_counter() - t0
        early = statistics.median(timings[5:15])
        late = statistics.median(timings[-10:])
        size = sum(os.path.getsize(os.path.join(path, f)) for f in os.listdir(path))
        print(f"synthetic SmolLM2-shaped trace{' (light: one [1, 576] array per step)' if args.light else ''}: {args.steps} steps, {size / 2**30:.2f} GiB, written in {total:.1f} s")
        print(f"write cost per step: step ~10 {early * 1e3:.2f} ms, step ~{args.steps} {late * 1e3:.2f} ms, ratio {late / early:.2f}")
        opens = []
        for _ in range(3):
            t0 = time.perf_counter()
            tr = load_trace(path)
            opens.append(time.perf_counter() - t0)
        raw = open(os.path.join(path, "steps.jsonl"), "rb").read()
        t0 = time.perf_counter()
        for i, line in enumerate(raw.split(b"\n")[:-1]):
            unstamp(line, f"line {i + 1}")
        crc_share = time.perf_counter() - t0
        t0 = time.perf_counter()
        tr.steps[len(tr.steps) - 1]["hook_embed"].sum()
        first_read = time.perf_counter() - t0
        print(f"open {len(tr.steps)}-step trace: {min(opens) * 1e3:.0f} ms (best of 3; target < 1000 ms); "
              f"first array of the last step (header + checksum): {first_read * 1e3:.1f} ms")
        print(f"of the open: verifying the crc32 of every steps.jsonl line ({len(raw) / 2**20:.1f} MiB) {crc_share * 1e3:.0f} ms")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
