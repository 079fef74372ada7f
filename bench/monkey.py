"""Run the app's seeded monkey (tests/support/monkey.py) for any number of events.

    python bench/monkey.py --seed 7 --events 2000            # replay, then live
    python bench/monkey.py --seed 7 --events 500 --mode live --size 80x24

Prints events/second per session and the first failure with its seed and event index (the same seed
replays the same sequence of draws); exits 1 when an invariant broke.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from tests.support.monkey import hostile_replay_trace, run_live, run_replay  # noqa: E402
from tests.support.tiny_models import byte_tokenizer, tiny_model  # noqa: E402


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--events", type=int, default=300)
    parser.add_argument("--mode", choices=["replay", "live", "both"], default="both")
    parser.add_argument("--size", default="120x40", help="the starting terminal size, WxH")
    parser.add_argument("--seeds", type=int, default=1, help="run seeds seed, seed+1, ... (stops at the first failure)")
    args = parser.parse_args(argv)
    size = tuple(int(v) for v in args.size.lower().split("x"))
    model, tokenizer = tiny_model("llama"), byte_tokenizer()
    with tempfile.TemporaryDirectory(prefix="stepscope-monkey-") as tmp:
        os.chdir(tmp)  # `w` and exports write under the working directory
        trace_dir = hostile_replay_trace(os.path.join(tmp, "trace"), model, tokenizer)
        for seed in range(args.seed, args.seed + args.seeds):
            for mode in (["replay", "live"] if args.mode == "both" else [args.mode]):
                if mode == "replay":
                    outcome = run_replay(trace_dir, seed, args.events, size)
                else:
                    outcome = run_live(model, tokenizer, seed, args.events, size)
                rate = outcome.events / outcome.seconds if outcome.seconds else 0.0
                print(f"{mode:6} seed {seed}: {outcome.events} events in {outcome.seconds:.1f} s "
                      f"({rate:.1f} events/s); seen {outcome.seen}", flush=True)
                if outcome.failure is not None:
                    print(f"FIRST FAILURE ({mode}): {outcome.failure}")
                    return 1
    print("no invariant broke")
    return 0


if __name__ == "__main__":
    sys.exit(main())
