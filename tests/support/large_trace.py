"""A long, consistent synthetic trace made fast: build_trace's prefill and one decode step, then
`n_steps` decode steps whose entries say what a real writer would (positions, tokens, sampling
records) and whose files are hard links of that one decode step file (the same bytes and checksum:
a decode step's arrays have one row whatever its position)."""

from __future__ import annotations

import json
import os

from stepscope.tracer.trace_format import stamp_json, step_filename, unstamp
from tests.support.synthetic_trace import build_trace


def build_large_trace(path, n_steps: int = 200_000) -> str:
    """A trace of 1 prefill + `n_steps` - 1 decode steps at `path` (a new directory)."""
    path = build_trace(path, 1)
    log = os.path.join(path, "steps.jsonl")
    lines = open(log, "rb").read().splitlines()
    first, decode = (json.loads(unstamp(line, log)) for line in lines)
    start = decode["positions"][0]
    source = os.path.join(path, decode["file"])
    with open(log, "wb") as fh:
        fh.write(stamp_json(first) + b"\n")
        for i in range(1, n_steps):
            e = dict(decode, index=i, positions=[start + i - 1, start + i], file=step_filename(i),
                     token=dict(decode["token"], id=3 + i % 40, text=f" w{i % 997}", position=start + i))
            e["sampling"] = dict(decode["sampling"], entropy=0.5 + (i % 1000) / 1000, chosen_prob=0.25 + (i % 500) / 1000)
            fh.write(stamp_json(e) + b"\n")
            if i > 1:
                os.link(source, os.path.join(path, e["file"]))
    manifest = os.path.join(path, "manifest.json")
    m = json.loads(unstamp(open(manifest, "rb").read().rstrip(), manifest))
    m["generation"]["max_new_tokens"] = n_steps
    m["finished"] = True
    open(manifest, "wb").write(stamp_json(m))
    return path
