"""What tensor-parallel tracing spends on joining shards, and what per-rank writing would save.

    torchrun --standalone --nproc-per-node 2 bench/tensor_parallel.py MODEL_DIR [STEPS]

Rank 0 prints: seconds in the per-step gather of the sharded tensors, the bytes gathered, the
sharded share of the trace, the seconds spent writing steps, and the whole run's seconds.
Writing per rank would remove the gather but still write the same bytes in total (each rank
its shard), and the reader would have to join shards on every read.
"""

from __future__ import annotations

import sys
import tempfile
import time

from stepscope.tracer.session import GenerationSettings, LiveSession

model = sys.argv[1]
steps = int(sys.argv[2]) if len(sys.argv) > 2 else 8
out = tempfile.mkdtemp(prefix="stepscope-tp-bench-")
session = LiveSession.open(model, prompt="The capital of France is", out=out, device="cpu", tensor_parallel=True,
                           settings=GenerationSettings(chat=False, max_new_tokens=steps, stop_at_eos=False))
session.profile = {}
start = time.perf_counter()
session.run()
total = time.perf_counter() - start
if session.tensor_parallel.leader:
    gather = session.recorder.shards
    size = session.trace.nbytes
    print(f"steps {steps}  run {total:.3f}s  gather {gather.seconds:.4f}s ({100 * gather.seconds / total:.1f}%)  "
          f"gathered {gather.bytes / 2**20:.2f} MiB of a {size / 2**20:.2f} MiB trace  "
          f"write {session.profile.get('write', 0.0):.4f}s")
