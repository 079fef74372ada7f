"""Making a branch: the parent's KV cache copied and cropped vs the shared prefix recomputed.

Traces a prompt on the embedded SmolLM2 (recording only the logits, to keep the run short),
then, side by side in one run, times the cache a branch at step t starts from, made both ways
(tracer.branch.branch_cache's crop, and one unrecorded prefill over the same positions, which is
what a model whose cache cannot be cropped pays), and checks they give the same next logits.

    python bench/branch.py [--tokens 512] [--new 8] [--repeat 3]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tokens", type=int, default=512)
    ap.add_argument("--new", type=int, default=8)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    import torch
    from transformers import DynamicCache

    from stepscope.tracer.branch import BranchSet, branch_cache
    from stepscope.tracer.session import GenerationSettings, LiveSession

    sentence = "The capital of France is Paris, and the river that runs through it is the Seine. "
    prompt = sentence * max(1, args.tokens // 19)
    out = os.path.join(tempfile.mkdtemp(prefix="stepscope-branch-"), "trace")
    s = LiveSession.open(None, prompt=prompt, settings=GenerationSettings(max_new_tokens=args.new, chat=False, logit_lens=False),
                         out=out, record=["logits"])
    BranchSet(s)
    s.run()
    step = args.new - 1
    start = len(s.prompt_ids) + step - 1
    ids = [t["id"] for t in s.writer.manifest["tokens"][:start]]
    nxt = torch.tensor([[s.writer.manifest["tokens"][start]["id"]]])
    crop_t, full_t = [], []
    for _ in range(args.repeat):
        t0 = time.perf_counter()
        cropped, how = branch_cache(s, step, start, ids)
        crop_t.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        rebuilt = DynamicCache(config=s.model.config)
        with torch.no_grad():
            s.model(input_ids=torch.tensor([ids]), use_cache=True, **{s._cache_kw: rebuilt})
        full_t.append(time.perf_counter() - t0)
    with torch.no_grad():
        a = s.model(input_ids=nxt, use_cache=True, **{s._cache_kw: cropped}).logits[0, -1]
        b = s.model(input_ids=nxt, use_cache=True, **{s._cache_kw: rebuilt}).logits[0, -1]
    crop, full = min(crop_t), min(full_t)
    print(f"SmolLM2-135M, {len(s.prompt_ids)}-token prompt, branch at step {step} ({start} cached positions), "
          f"best of {args.repeat}, {torch.get_num_threads()} threads")
    print(f"  cache copied and cropped ({how}): {crop * 1000:8.1f} ms")
    print(f"  prefix recomputed (one prefill):  {full * 1000:8.1f} ms")
    print(f"  ratio recompute / crop: {full / crop:.1f}x   next-step logits max |diff| {float((a - b).abs().max()):.2e}")


if __name__ == "__main__":
    main()
