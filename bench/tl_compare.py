"""Per traced token: stepscope's full tracing against TransformerLens's per-step run_with_cache loop.

    python bench/tl_compare.py [--model M] [--prompt-tokens 128] [--new-tokens 32]

Same model and prompt, greedy, side by side in one process: plain `model.generate` (the unit),
stepscope's full tracing to disk (every name, every layer, every step, the lens available),
and the loop TransformerLens users write to see every activation of every generated token:
`logits, cache = bridge.run_with_cache(tokens)` once per new token (TransformerBridge in
compatibility mode without weight processing, as in docs/FIDELITY.md). Prints ms per token and
the ratio; the target is stepscope >= 5x faster per traced token. It also compares every name
both record on the prompt (stepscope's prefill step against the loop's first cache): the
largest relative error per name (docs/FIDELITY.md).

transformer_lens is never a dependency: without it this prints a line and exits 0.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from bench.trace_overhead import TEXT  # noqa: E402
from stepscope.tracer import load_trace  # noqa: E402
from stepscope.tracer.loading import load_model  # noqa: E402
from stepscope.tracer.session import GenerationSettings, LiveSession  # noqa: E402


def tl_bridge(loaded):
    """TransformerLens's bridge around the already loaded model, or None when it is not installed."""
    try:
        from transformer_lens.model_bridge import TransformerBridge
    except ImportError:
        return None
    bridge = TransformerBridge.boot_transformers(loaded.source, hf_model=loaded.model, tokenizer=loaded.tokenizer, device="cpu")
    enable = getattr(bridge, "enable_compatibility_mode", None)
    if enable is not None:
        enable(no_processing=True)
    return bridge


def name_errors(step, cache) -> dict[str, list[float]]:
    """{block-local name: [max |a - b| / max(max |b|, 1) per layer]} over the names both hold."""
    errors: dict[str, list[float]] = {}
    for name in step.names:
        if name not in cache:
            continue
        a = np.asarray(step[name], dtype=np.float64)
        b = cache[name][0].double().cpu().numpy()  # the batch axis dropped
        if a.shape != b.shape:
            errors.setdefault(name.split(".", 2)[-1] + f" (shape {a.shape} vs {b.shape})", []).append(float("inf"))
            continue
        fin = np.isfinite(a) & np.isfinite(b)
        err = float(np.abs(a[fin] - b[fin]).max(initial=0.0)) / max(float(np.abs(b[fin]).max(initial=0.0)), 1.0)
        errors.setdefault(name.split(".", 2)[-1] if name.startswith("blocks.") else name, []).append(err)
    return errors


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=None)
    ap.add_argument("--prompt-tokens", type=int, default=128)
    ap.add_argument("--new-tokens", type=int, default=32)
    args = ap.parse_args()
    try:
        import transformer_lens  # noqa: F401
    except ImportError:
        print("transformer_lens is not installed: comparison skipped (pip install transformer_lens to run it)")
        return 0

    loaded = load_model(args.model, device="cpu")
    model, tok = loaded.model, loaded.tokenizer
    ids = torch.tensor([tok(TEXT * (args.prompt_tokens // 20 + 2))["input_ids"][: args.prompt_tokens]])  # [1, P]
    n = args.new_tokens
    print(f"model {loaded.name}, prompt {ids.shape[1]} tokens, {n} new tokens, torch threads {torch.get_num_threads()}")

    with torch.no_grad():
        model.generate(ids[:, :16], max_new_tokens=2, do_sample=False, pad_token_id=0)  # warm-up
        t0 = time.perf_counter()
        plain = model.generate(ids, max_new_tokens=n, do_sample=False, eos_token_id=None, pad_token_id=0)[0, ids.shape[1] :].tolist()
        plain_s = time.perf_counter() - t0

    out = tempfile.mkdtemp(prefix="stepscope-tl-")
    try:
        settings = GenerationSettings(max_new_tokens=n, chat=False, stop_at_eos=False)
        t0 = time.perf_counter()
        session = LiveSession(model, tok, settings=settings, out=out, prompt_ids=ids[0].tolist())
        session.run()
        ours_s = time.perf_counter() - t0
        ours = [t["id"] for t in session.writer.manifest["tokens"][ids.shape[1] :]]
        prefill = load_trace(out).steps[0]

        bridge = tl_bridge(loaded)
        tokens = ids.clone()
        errors = {}
        t0 = time.perf_counter()
        with torch.no_grad():
            for i in range(n):
                logits, cache = bridge.run_with_cache(tokens)  # every activation of the whole sequence
                tokens = torch.cat([tokens, logits[:, -1:].argmax(-1)], dim=1)
                if i == 0:
                    t1 = time.perf_counter()
                    errors = name_errors(prefill, cache)
                    t0 += time.perf_counter() - t1  # the comparison is not part of the loop's time
                del cache
        tl_s = time.perf_counter() - t0
        theirs = tokens[0, ids.shape[1] :].tolist()
    finally:
        shutil.rmtree(out, ignore_errors=True)

    ms = lambda s: 1000 * s / n  # noqa: E731
    print(f"same tokens: stepscope {ours == plain}, TransformerLens {theirs == plain}")
    print(f"plain generate:                      {ms(plain_s):8.1f} ms/token  1.00x")
    print(f"stepscope full tracing to disk:      {ms(ours_s):8.1f} ms/token  {ours_s / plain_s:5.2f}x")
    print(f"TransformerLens run_with_cache loop: {ms(tl_s):8.1f} ms/token  {tl_s / plain_s:5.2f}x")
    print(f"stepscope is {tl_s / ours_s:.1f}x faster per traced token (target >= 5x)")
    print(f"names both record on the prompt ({len(errors)} kinds), largest relative error per name:")
    for local, errs in sorted(errors.items(), key=lambda kv: -max(kv[1])):
        print(f"  {local:32s} {max(errs):.2e}  ({len(errs)} tensors)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
