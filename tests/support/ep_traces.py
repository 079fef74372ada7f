"""`torchrun ... tests/support/ep_traces.py ARGS [-- ARGS ...]`: `stepscope ARGS` for each argument
list in turn, in one process per rank (one start for several tiny traces). After each, every rank
prints `experts: LOCAL of TOTAL`: how many experts of the loaded model's stacked expert weights
(`...experts.*` parameters [n_experts, ...]) it holds, or `experts: none`
(tests/tracer/test_expert_parallel.py)."""

from __future__ import annotations

import sys

from torch.distributed.tensor import DTensor

from stepscope.cli.main import main
from stepscope.tracer import session

LOADED = []


def load_and_keep(*args, _load=session.load_model, **kwargs):
    loaded = _load(*args, **kwargs)
    LOADED.append(loaded.model)
    return loaded


def expert_split(model) -> str:
    stacked = [p for name, p in model.named_parameters() if ".experts." in name and p.dim() == 3]
    if not stacked:
        return "none"
    local = {p.to_local().shape[0] if isinstance(p, DTensor) else p.shape[0] for p in stacked}
    total = {p.shape[0] for p in stacked}
    return f"{','.join(map(str, sorted(local)))} of {','.join(map(str, sorted(total)))}"


if __name__ == "__main__":
    session.load_model = load_and_keep
    runs: list[list[str]] = [[]]
    for arg in sys.argv[1:]:
        if arg == "--":
            runs.append([])
        else:
            runs[-1].append(arg)
    for run in runs:
        status = main(run)
        print(f"experts: {expert_split(LOADED[-1])}", flush=True)
        if status:
            sys.exit(status)
