"""Tracing overhead: plain `model.generate` against full tracing to disk, side by side, one process.

    python bench/trace_overhead.py [--model M] [--prompt-tokens 128] [--new-tokens 128] [--repeats 2]

Same model, same 128-token prompt, same 128 greedy tokens (EOS disabled in both so the lengths
match; the token lists are compared). Also measures the traced eager attention alone (no hooks,
no disk), to separate the cost of recording the real attention pattern, and tracing without the
per-layer logit lens (on a CPU the lens costs about 30 LM-head passes per step). Prints wall-time ratios,
bytes per generated token and peak memory (RSS on the CPU, allocator peak on CUDA).
Targets (issue #2): full tracing <= 1.15x on the CPU, <= 1.3x on a GPU.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import torch  # noqa: E402

from tracer.attention import IMPLEMENTATION, register  # noqa: E402
from tracer.loading import load_model  # noqa: E402
from tracer.session import GenerationSettings, LiveSession  # noqa: E402
from tracer.trace_format import human_bytes  # noqa: E402

TEXT = (
    "The history of the city begins with a small settlement on the river, where traders met to exchange "
    "grain, salt and cloth. Over the centuries the market grew into a town with walls, churches and a "
    "university, and scholars from many countries came to study law, medicine and the stars. "
)


def _reset_peak(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    else:
        try:
            with open("/proc/self/clear_refs", "w") as fh:
                fh.write("5")  # resets VmHWM (peak RSS) on Linux
        except OSError:
            pass


def _peak(device: str) -> int:
    if device.startswith("cuda"):
        torch.cuda.synchronize()
        return torch.cuda.max_memory_allocated()
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    return 0


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def run_generate(model, ids, new_tokens, device):
    _reset_peak(device)
    t0 = time.perf_counter()
    with torch.no_grad():
        out = model.generate(ids, max_new_tokens=new_tokens, do_sample=False, eos_token_id=None, pad_token_id=0)
    _sync(device)
    return time.perf_counter() - t0, out[0, ids.shape[1] :].tolist(), _peak(device)


def run_trace(model, tok, ids, new_tokens, device, out_dir, logit_lens=True):
    settings = GenerationSettings(max_new_tokens=new_tokens, chat=False, stop_at_eos=False, logit_lens=logit_lens)
    _reset_peak(device)
    t0 = time.perf_counter()
    session = LiveSession(model, tok, settings=settings, out=out_dir, background_writer="auto", prompt_ids=ids[0].tolist())
    session.run()
    _sync(device)
    seconds = time.perf_counter() - t0
    tokens = [t["id"] for t in session.writer.manifest["tokens"][len(session.prompt_ids) :]]
    size = sum(e["bytes"] for e in session.writer.manifest["steps"])
    decode = [e["bytes"] for e in session.writer.manifest["steps"][1:]]
    return seconds, tokens, _peak(device), size, (statistics.mean(decode) if decode else 0)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=None)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--prompt-tokens", type=int, default=128)
    ap.add_argument("--new-tokens", type=int, default=128)
    ap.add_argument("--repeats", type=int, default=2)
    args = ap.parse_args()

    loaded = load_model(args.model, device=args.device)
    model, tok = loaded.model, loaded.tokenizer
    device = str(next(model.parameters()).device)
    text = TEXT * (args.prompt_tokens // 20 + 2)
    ids = torch.tensor([tok(text)["input_ids"][: args.prompt_tokens]], device=device)
    print(f"model {loaded.name} on {device}, {model.dtype}; prompt {ids.shape[1]} tokens, {args.new_tokens} new tokens")
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}")

    base_impl = model.config._attn_implementation
    register()
    plain, traced, eager_only, no_lens = [], [], [], []
    sizes = None
    tmp = tempfile.mkdtemp(prefix="stepscope-bench-")
    try:
        run_generate(model, ids[:, :16], 4, device)  # warm-up
        for r in range(args.repeats):
            s, plain_tokens, plain_peak = run_generate(model, ids, args.new_tokens, device)
            plain.append(s)
            model.set_attn_implementation(IMPLEMENTATION)
            s, _, _ = run_generate(model, ids, args.new_tokens, device)
            eager_only.append(s)
            model.set_attn_implementation(base_impl)
            out_dir = os.path.join(tmp, f"run{r}")
            s, traced_tokens, trace_peak, size, decode_bytes = run_trace(model, tok, ids, args.new_tokens, device, out_dir)
            traced.append(s)
            sizes = (size, decode_bytes)
            shutil.rmtree(out_dir)
            s, lens_tokens, _, _, _ = run_trace(model, tok, ids, args.new_tokens, device, out_dir, logit_lens=False)
            no_lens.append(s)
            shutil.rmtree(out_dir)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    same = plain_tokens == traced_tokens == lens_tokens
    p, t, e, n = min(plain), min(traced), min(eager_only), min(no_lens)
    print(f"same tokens in both runs: {same}")
    print(f"plain generate ({base_impl}):        {p:7.2f} s  ({1000 * p / args.new_tokens:6.1f} ms/token)")
    print(f"generate, traced attention only:     {e:7.2f} s  ratio {e / p:5.2f}x")
    print(f"full tracing to disk:                {t:7.2f} s  ratio {t / p:5.2f}x  (target {'1.3' if 'cuda' in device else '1.15'}x)")
    print(f"tracing to disk, no logit lens:      {n:7.2f} s  ratio {n / p:5.2f}x")
    print(f"trace size: {human_bytes(sizes[0])} total, {human_bytes(sizes[0] / args.new_tokens)} per generated token "
          f"(decode step {human_bytes(sizes[1])}, prefill included in the mean)")
    print(f"peak memory: plain {human_bytes(plain_peak)}, tracing {human_bytes(trace_peak)} "
          f"({'CUDA allocator' if 'cuda' in device else 'process RSS'})")
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
