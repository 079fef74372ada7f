"""A long, consistent synthetic trace made fast: build_trace's prefill and one decode step, then
`n_steps` decode steps whose entries say what a real writer would (positions, tokens, sampling
records) and whose files are hard links of that one decode step file (the same bytes and checksum;
only their attention maps' key columns, checked when a step is first read, would differ in a real
trace). A file system's link limit (65,000 on ext4) is met by starting another copy."""

from __future__ import annotations

import errno
import json
import os
import shutil

from stepscope.tracer.trace_format import stamp, stamp_json, step_filename, unstamp
from tests.support.synthetic_trace import build_trace


def _link(source: str, target: str) -> str:
    """Hard-link `target` to `source`; a copy when `source` has as many links as the file system allows
    (the copy is the source of the next links)."""
    try:
        os.link(source, target)
        return source
    except OSError as exc:
        if exc.errno != errno.EMLINK:
            raise
    shutil.copyfile(source, target)
    return target


def build_large_trace(path, n_steps: int = 200_000) -> str:
    """A trace of 1 prefill + `n_steps` - 1 decode steps at `path` (a new directory)."""
    path = build_trace(path, 1)
    log = os.path.join(path, "steps.jsonl")
    lines = open(log, "rb").read().splitlines()
    first, decode = (json.loads(unstamp(line, log)) for line in lines)
    start = decode["positions"][0]
    source = os.path.join(path, decode["file"])
    # every line is the decode entry with its own numbers: one template, filled per step
    marks = dict(decode, index=-1001, positions=[-1002, -1003], file="@FILE@",
                 token=dict(decode["token"], id=-1004, text="@TEXT@", position=-1005))
    marks["sampling"] = dict(decode["sampling"], chosen_id=-1004, entropy=-1006.5, chosen_prob=-1007.5)
    template = json.dumps(marks, ensure_ascii=False, separators=(",", ":")).replace("{", "{{").replace("}", "}}")
    for mark, slot in (("-1001", "{index}"), ("-1002", "{p0}"), ("-1003", "{p1}"), ("-1004", "{token}"), ("@FILE@", "{file}"),
                       ("@TEXT@", "{text}"), ("-1005", "{position}"), ("-1006.5", "{entropy}"), ("-1007.5", "{chosen_prob}")):
        assert mark in template, mark
        template = template.replace(mark, slot)
    with open(log, "wb", buffering=1 << 20) as fh:
        fh.write(stamp_json(first) + b"\n")
        for i in range(1, n_steps):
            name = step_filename(i)
            body = template.format(index=i, p0=start + i - 1, p1=start + i, token=3 + i % 40, file=name, text=f" w{i % 997}",
                                   position=start + i, entropy=repr(0.5 + (i % 1000) / 1000), chosen_prob=repr(0.25 + (i % 500) / 1000))
            fh.write(stamp(body.encode()) + b"\n")
            if i > 1:
                source = _link(source, os.path.join(path, name))
    manifest = os.path.join(path, "manifest.json")
    m = json.loads(unstamp(open(manifest, "rb").read().rstrip(), manifest))
    m["generation"]["max_new_tokens"] = n_steps
    m["model"]["n_ctx"] = max(m["model"]["n_ctx"], m["prompt_len"] + n_steps)  # a long-context model
    m["finished"] = True
    open(manifest, "wb").write(stamp_json(m))
    return path
