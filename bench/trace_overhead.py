"""Tracing overhead: plain `model.generate` against full tracing to disk, side by side, one process.

    python bench/trace_overhead.py [--model M] [--prompt-tokens 128] [--new-tokens 128] [--repeats 3]
    python bench/trace_overhead.py --random-llama 1b --dtype bfloat16 --storage float32 --lockstep-only


Same model, same 128-token prompt, same 128 greedy tokens (EOS disabled in both so the lengths
match; the token lists are compared). Also measures the traced eager attention alone (no hooks,
no disk), to separate the cost of recording the real attention pattern, and full tracing with
the logit lens computed while tracing ("eager": ~30 LM-head passes per step) instead of lazily
by the reader from the recorded resid_post rows (the default on a CPU; the lens is still in the
viewer). Prints wall-time ratios, the per-part cost of a decode step, MB written per generated
token and per second of tracing, and peak memory (RSS on the CPU, allocator peak on CUDA).
`--random-llama 1b` replaces the model by a Llama-3.2-1B-shaped one of random weights built from a
config (no download); `--storage` is the dtype the trace stores (float32, or float16 / bfloat16:
half the bytes).
Target: full tracing (every name, every layer, every step, to disk, lens available) <= 1.3x.
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
from transformers import DynamicCache, LlamaConfig, LlamaForCausalLM  # noqa: E402

from stepscope.tracer import load_trace  # noqa: E402
from stepscope.tracer.attention import IMPLEMENTATION, register  # noqa: E402
from stepscope.tracer.lens import LogitLens  # noqa: E402
from stepscope.tracer.loading import load_model  # noqa: E402
from stepscope.tracer.session import GenerationSettings, LiveSession, cache_kwarg  # noqa: E402
from stepscope.tracer.trace_format import (
    LENS_FILE,  # noqa: E402
    human_bytes,  # noqa: E402
)

TEXT = (
    "The history of the city begins with a small settlement on the river, where traders met to exchange "
    "grain, salt and cloth. Over the centuries the market grew into a town with walls, churches and a "
    "university, and scholars from many countries came to study law, medicine and the stars. "
)


RANDOM_LLAMA = {  # Llama-3.2-1B's shape (with SmolLM2's vocabulary)
    "1b": dict(hidden_size=2048, intermediate_size=8192, num_hidden_layers=16, num_attention_heads=32,
               num_key_value_heads=8, max_position_embeddings=8192, rope_theta=500000.0),
}


def random_llama(size: str, vocab: int, device, dtype: str):
    """A Llama-shaped model of random weights (no download), in `dtype` (bfloat16 unless given)."""
    torch_dtype = {"auto": torch.bfloat16, "float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}[dtype]
    config = LlamaConfig(vocab_size=vocab, **RANDOM_LLAMA[size])
    torch.manual_seed(0)
    with torch.device(device):
        model = LlamaForCausalLM(config).to(torch_dtype)
    model.generation_config.pad_token_id = 0
    return model.eval()


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


def run_trace(model, tok, ids, new_tokens, device, out_dir, lens_mode="auto", storage=None):
    """(seconds, tokens, peak, trace bytes, mean decode-step bytes, {part: ms per decode step}, lens mode used)."""
    settings = GenerationSettings(max_new_tokens=new_tokens, chat=False, stop_at_eos=False, lens_mode=lens_mode)
    _reset_peak(device)
    t0 = time.perf_counter()
    session = LiveSession(model, tok, settings=settings, out=out_dir, background_writer="auto", prompt_ids=ids[0].tolist(),
                          store_dtype=storage)
    session.step()  # the prefill
    session.profile = {}  # decode steps only
    session.run()
    _sync(device)
    seconds = time.perf_counter() - t0
    tokens = [t["id"] for t in session.writer.manifest["tokens"][len(session.prompt_ids) :]]
    size = sum(e["bytes"] for e in session.writer.manifest["steps"]) + _lens_bytes(out_dir)
    decode = [e["bytes"] for e in session.writer.manifest["steps"][1:]]
    parts = {k: 1000 * v / max(1, new_tokens - 1) for k, v in session.profile.items()}
    mode = "eager" if session.eager_lens else "lazy"
    return seconds, tokens, _peak(device), size, (statistics.mean(decode) if decode else 0), parts, mode


def lockstep(model, tok, ids, new_tokens, device, out_dir, plain_impl, storage=None):
    """Plain decoding (the model's own attention, KV cache, greedy argmax: what `generate` does per
    token) and full tracing, alternating token by token so both see the same machine load.
    Returns (plain seconds per decode step, traced seconds per decode step, same tokens?, trace bytes,
    mean decode-step bytes, {part: ms per decode step}, lens mode used)."""
    settings = GenerationSettings(max_new_tokens=new_tokens, chat=False, stop_at_eos=False)
    session = LiveSession(model, tok, settings=settings, out=out_dir, background_writer="auto", prompt_ids=ids[0].tolist(),
                          store_dtype=storage)
    kw, cache = cache_kwarg(model), DynamicCache(config=model.config)

    def plain_mode(on: bool) -> None:  # outside the timed regions: the session's attention and wrappers out/in
        if on:
            session.recorder.remove()
            model.set_attn_implementation(plain_impl)
        else:
            model.set_attn_implementation(IMPLEMENTATION)
            session.recorder.install()

    plain_t, traced_t, plain_tokens = [], [], []
    x = ids
    with torch.no_grad():
        for i in range(new_tokens):
            plain_mode(True)
            _sync(device)
            t0 = time.perf_counter()
            x = model(input_ids=x, use_cache=True, **{kw: cache}).logits[:, -1:].argmax(-1)  # [1, 1]
            plain_tokens.append(int(x))
            _sync(device)
            t1 = time.perf_counter()
            plain_mode(False)
            t2 = time.perf_counter()
            session.step()
            _sync(device)
            t3 = time.perf_counter()
            if i:  # decode steps only (step 0 is the prefill)
                plain_t.append(t1 - t0)
                traced_t.append(t3 - t2)
            else:
                session.profile = {}  # the parts of the decode steps
    session.close()
    traced_tokens = [t["id"] for t in session.writer.manifest["tokens"][len(session.prompt_ids) :]]
    steps = session.writer.manifest["steps"]
    size = sum(e["bytes"] for e in steps) + _lens_bytes(out_dir)
    decode = statistics.mean(e["bytes"] for e in steps[1:]) if len(steps) > 1 else 0
    parts = {k: 1000 * v / max(1, len(traced_t)) for k, v in (session.profile or {}).items()}
    mode = "eager" if session.eager_lens else "lazy"
    return plain_t, traced_t, plain_tokens == traced_tokens, size, decode, parts, mode


MB = 1e6


def written(size: int, decode_bytes: float, new_tokens: int, decode_seconds: float) -> str:
    """MB per generated token (prefill and lens file spread over the tokens), a decode step's MB and
    the rate a decode step writes at while tracing (MB/s)."""
    return (f"{size / MB / new_tokens:.2f} MB per generated token ({size / MB:.1f} MB in all), decode step "
            f"{decode_bytes / MB:.2f} MB, {decode_bytes / MB / decode_seconds:.1f} MB/s while tracing")


def _lens_bytes(out_dir: str) -> int:
    path = os.path.join(out_dir, LENS_FILE)
    return os.path.getsize(path) if os.path.isfile(path) else 0


def lens_view_ms(out_dir: str, steps: int = 5) -> float:
    """What the lazy lens costs the viewer: ms to compute one step's lens from the trace (numpy)."""
    tr = load_trace(out_dir)
    lens = LogitLens.open(out_dir, tr.manifest["model"].get("lens"))
    if lens is None:
        return float("nan")
    t0 = time.perf_counter()
    for step in list(tr.steps)[-steps:]:
        lens.for_step(step)
    return 1000 * (time.perf_counter() - t0) / steps


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=None)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--prompt-tokens", type=int, default=128)
    ap.add_argument("--new-tokens", type=int, default=128)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--dtype", default="auto")
    ap.add_argument("--lockstep-only", action="store_true", help="only the token-by-token alternating comparison")
    ap.add_argument("--random-llama", choices=sorted(RANDOM_LLAMA), help="a Llama-shaped model with random weights "
                    "built from a config (SmolLM2's tokenizer), instead of --model")
    ap.add_argument("--storage", choices=["auto", "float32", "float16", "bfloat16"], default="auto",
                    help="dtype of the stored tensors (auto: float16 for float16 models, else float32)")
    args = ap.parse_args()

    loaded = load_model(args.model, device=args.device, dtype=args.dtype)
    model, tok = loaded.model, loaded.tokenizer
    if args.random_llama:
        model = random_llama(args.random_llama, len(tok), next(model.parameters()).device, args.dtype)
        loaded.name = f"random Llama-shaped {args.random_llama} ({sum(p.numel() for p in model.parameters()) / 1e9:.2f}B parameters)"
    device = str(next(model.parameters()).device)
    text = TEXT * (args.prompt_tokens // 20 + 2)
    ids = torch.tensor([tok(text)["input_ids"][: args.prompt_tokens]], device=device)
    print(f"model {loaded.name} on {device}, {model.dtype}; prompt {ids.shape[1]} tokens, {args.new_tokens} new tokens; "
          f"storage {args.storage}")
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}")

    base_impl = model.config._attn_implementation
    register()
    plain, traced, eager_only, eager_lens = [], [], [], []
    sizes, parts, lens_ms, mode = None, {}, float("nan"), "?"
    tmp = tempfile.mkdtemp(prefix="stepscope-bench-")
    try:
        run_generate(model, ids[:, :16], 4, device)  # warm-up
        for r in range(0 if args.lockstep_only else args.repeats):
            s, plain_tokens, plain_peak = run_generate(model, ids, args.new_tokens, device)
            plain.append(s)
            model.set_attn_implementation(IMPLEMENTATION)
            s, _, _ = run_generate(model, ids, args.new_tokens, device)
            eager_only.append(s)
            model.set_attn_implementation(base_impl)
            out_dir = os.path.join(tmp, f"run{r}")
            s, traced_tokens, trace_peak, size, decode_bytes, p_parts, mode = run_trace(
                model, tok, ids, args.new_tokens, device, out_dir, storage=args.storage)
            if not traced or s < min(traced):
                parts = p_parts
            traced.append(s)
            sizes = (size, decode_bytes)
            lens_ms = lens_view_ms(out_dir)
            shutil.rmtree(out_dir)
            s, lens_tokens, *_ = run_trace(model, tok, ids, args.new_tokens, device, out_dir, lens_mode="eager", storage=args.storage)
            eager_lens.append(s)
            shutil.rmtree(out_dir)
        lock_dir = os.path.join(tmp, "lockstep")
        lock_plain, lock_traced, lock_same, lock_size, lock_decode, lock_parts, lock_mode = lockstep(
            model, tok, ids, args.new_tokens, device, lock_dir, base_impl, storage=args.storage)
        shutil.rmtree(lock_dir)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    med = statistics.median
    pairs = sorted(b / a for a, b in zip(lock_plain, lock_traced))
    print(f"token by token, alternating (same load for both): plain decode step {1000 * med(lock_plain):.1f} ms, "
          f"full tracing {1000 * med(lock_traced):.1f} ms (medians); ratio of medians {med(lock_traced) / med(lock_plain):.2f}x, "
          f"median of per-token ratios {med(pairs):.2f}x, ratio of totals {sum(lock_traced) / sum(lock_plain):.2f}x "
          f"(same tokens: {lock_same}; target 1.3x)")
    print(f"written, token by token: {written(lock_size, lock_decode, args.new_tokens, med(lock_traced))}")
    print(f"per traced decode step (ms; {lock_mode} lens):")
    for name, ms in lock_parts.items():
        print(f"  {name:36s} {ms:7.2f}")
    if args.lockstep_only:
        return 0 if lock_same else 1
    same = plain_tokens == traced_tokens == lens_tokens
    p, t, e, n = min(plain), min(traced), min(eager_only), min(eager_lens)
    print(f"same tokens in every run: {same}")
    print(f"plain generate ({base_impl}):        {p:7.2f} s  ({1000 * p / args.new_tokens:6.1f} ms/token)")
    print(f"generate, traced attention only:     {e:7.2f} s  ratio {e / p:5.2f}x")
    paired = sorted(b / a for a, b in zip(plain, traced))  # each repeat runs plain then traced, same conditions
    print(f"full tracing to disk, {mode} lens:    {t:7.2f} s  ratio {t / p:5.2f}x  (target 1.3x; per repeat "
          f"{', '.join(f'{r:.2f}' for r in paired)}, median {statistics.median(paired):.2f}x)")
    print(f"full tracing, lens while tracing:    {n:7.2f} s  ratio {n / p:5.2f}x")
    print(f"per decode step of the full tracing run (ms; plain generate: {1000 * p / args.new_tokens:.1f} per token):")
    for name, ms in parts.items():
        print(f"  {name:36s} {ms:7.2f}")
    print(f"  lazy lens in the viewer, per step    {lens_ms:7.2f}  (numpy, computed once when a step is shown)")
    print(f"trace size: {human_bytes(sizes[0])} total, {human_bytes(sizes[0] / args.new_tokens)} per generated token "
          f"(decode step {human_bytes(sizes[1])}, prefill included in the mean)")
    print(f"written, whole run: {sizes[0] / MB / args.new_tokens:.2f} MB per generated token, "
          f"{sizes[0] / MB / t:.1f} MB/s over the whole traced run")
    print(f"peak memory: plain {human_bytes(plain_peak)}, tracing {human_bytes(trace_peak)} "
          f"({'CUDA allocator' if 'cuda' in device else 'process RSS'})")
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
