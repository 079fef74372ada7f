"""Opening a 200,000-step trace: small in memory and quick, every check of a short trace kept.

The time is the process' CPU time (a loaded CI machine stretches wall time, not CPU time), measured
in a fresh interpreter beside a yardstick taken in the same process: `json.loads` of the same step
log, the least any reader of it does. The memory is the growth of the process' peak resident size
across `load_trace`.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from stepscope.tracer import TraceError, load_trace, reader
from stepscope.tracer.schema import validate_entry
from stepscope.tracer.trace_format import unstamp
from tests.support.large_trace import build_large_trace
from tests.support.paths import ROOT
from tests.support.trace_edit import edit_entries

N_STEPS = 200_000

_MEASURE = r"""
import gc, json, resource, sys, time
from stepscope.tracer import load_trace

def cpu():
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime

path = sys.argv[1]
rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
c0, t0 = cpu(), time.perf_counter()
trace = load_trace(path)
load_cpu, load_wall = cpu() - c0, time.perf_counter() - t0
rss1 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
steps = len(trace.steps)
del trace
lines = open(path + "/steps.jsonl", "rb").read().splitlines()
gc.disable()  # as load_trace parses (no collection among the parsed containers)
c0 = cpu()
for start in range(0, len(lines), 5000):  # the yardstick: the log's JSON parsed, nothing else
    json.loads(b"[" + b",".join(lines[start : start + 5000]) + b"]")
json_cpu = cpu() - c0
print(json.dumps({"steps": steps, "load_cpu": load_cpu, "load_wall": load_wall, "json_cpu": json_cpu, "ratio": load_cpu / json_cpu,
                  "growth_mib": (rss1 - rss0) / 1024}))
"""


@pytest.fixture(params=["one batch", "small batches"])
def batches(request, monkeypatch):
    """The log read as one batch (its entries parsed as dicts) or in batches of about 20 lines (after
    the first, entries of the shape before are decoded as structs)."""
    if request.param == "small batches":
        monkeypatch.setattr(reader, "_BATCH_BYTES", 16 << 10)
        monkeypatch.setattr(reader, "_CHUNK_BYTES", 16 << 10)
    return request.param


@pytest.fixture(scope="module")
def large(tmp_path_factory):
    return build_large_trace(str(tmp_path_factory.mktemp("large") / "t"), N_STEPS)


def _lines(path: str) -> list[bytes]:
    return open(os.path.join(path, "steps.jsonl"), "rb").read().splitlines()


def test_a_200000_step_trace_opens_small_and_quick(large):
    out = subprocess.run([sys.executable, "-c", _MEASURE, large], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert out.returncode == 0, out.stderr
    got = json.loads(out.stdout)
    assert got["steps"] == N_STEPS
    assert got["growth_mib"] < 300, got  # the whole trace open: entries, tokens, checks
    # CPU time against the yardstick: parsing the log's JSON alone, in the same process
    assert got["load_cpu"] < 1.6 * got["json_cpu"], got  # (about 1.2 here; with every entry parsed as a dict: 2.5)


def test_the_entries_and_tokens_are_those_on_disk(large):
    trace = load_trace(large)
    lines = _lines(large)
    assert len(trace.steps) == len(lines) == N_STEPS and len(trace.tokens) == trace.prompt_len + N_STEPS
    for i in (0, 1, 2, 4_999, 5_000, 77_777, N_STEPS - 1):
        on_disk = json.loads(unstamp(lines[i], "steps.jsonl"))
        entry = trace.manifest["steps"][i]
        assert entry == on_disk and list(entry) == list(on_disk)  # the same keys, in the same order
        assert all(type(entry["sampling"][k]) is type(v) for k, v in on_disk["sampling"].items())
        assert trace.steps[i].entry is entry and trace.manifest["steps"][i] is entry  # one dict per step
        assert trace.tokens[trace.prompt_len + i] == on_disk["token"] == trace.steps[i].token
    assert trace.steps[-1].index == N_STEPS - 1 and trace.steps[-1].positions == (trace.prompt_len + N_STEPS - 2, trace.prompt_len + N_STEPS - 1)
    assert trace.nbytes == sum(json.loads(unstamp(line, "l"))["bytes"] for line in lines[:2]) + (N_STEPS - 2) * trace.manifest["steps"][2]["bytes"]


@pytest.mark.parametrize("where, edit, message", [
    (2_000, lambda s: s["stages"][0].update(kept=True), "steps[2000].sampling.stages[0].kept"),
    (2_500, lambda s: s.update(chosen_prob=1.5), "steps[2500].sampling.chosen_prob"),
    (2_600, lambda s: s.update(top_k=2.0), "steps[2600].sampling.top_k"),
    (2_700, lambda s: s.update(entropy=float("nan")), "steps[2700].sampling.entropy"),
])
def test_an_entry_deep_in_a_long_log_is_checked_like_any(tmp_path, batches, where, edit, message):
    """Entries held as columns are checked as validate_entry checks each: the first bad one is refused
    with its own error, however many entries like it came before."""
    path = build_large_trace(str(tmp_path / "t"), 3_000)

    def damage(entries):
        edit(entries[where]["sampling"])
        entries[where + 10]["sampling"]["chosen_prob"] = 7.0  # a later error is not the one told

    edit_entries(path, damage)
    bad = json.loads(unstamp(_lines(path)[where], "l"))
    with pytest.raises(TraceError) as want:
        validate_entry(bad, where, 2)
    with pytest.raises(TraceError) as got:
        load_trace(path)
    assert str(got.value) == str(want.value) and message in str(got.value)


def test_an_unusual_entry_among_plain_ones_reads_as_written(tmp_path, batches):
    """An entry with keys of its own (a live settings change, an odd alias map) is kept as it is, its
    strings made inert; the entries around it stay columns."""
    path = build_large_trace(str(tmp_path / "t"), 3_000)

    def odd(entries):
        entries[1400]["sampling"]["entropy"] = None  # a NaN the writer wrote as null
        entries[1401]["sampling"]["temperature"] = 1  # an integer where the others hold floats
        entries[1402]["seconds"] = None
        entries[1500]["settings"] = {"temperature": 0.5}
        entries[1500]["note\x1b"] = "x\x07"
        entries[1600]["aliases"] = {"blocks.1.hook_resid_pre": "blocks.0.hook_resid_post"}

    edit_entries(path, odd)
    trace = load_trace(path)
    assert trace.manifest["steps"][1400]["sampling"]["entropy"] is None and trace.manifest["steps"][1399]["sampling"]["entropy"] > 0
    assert type(trace.manifest["steps"][1401]["sampling"]["temperature"]) is int
    assert type(trace.manifest["steps"][1403]["sampling"]["temperature"]) is float
    assert trace.manifest["steps"][1402]["seconds"] is None and trace.manifest["steps"][1403]["seconds"] == 0.01
    assert trace.manifest["steps"][1500]["settings"] == {"temperature": 0.5}
    assert trace.manifest["steps"][1500]["note\\x1b"] == "x\\x07"
    assert trace.manifest["steps"][1600]["aliases"] == {"blocks.1.hook_resid_pre": "blocks.0.hook_resid_post"}
    assert trace.manifest["steps"][1601]["aliases"] == trace.manifest["steps"][1]["aliases"] != trace.manifest["steps"][1600]["aliases"]
    assert [t["id"] for t in trace.tokens[trace.prompt_len:]] == [e["token"]["id"] for e in trace.manifest["steps"]]


def test_a_container_equal_to_the_one_before_but_of_another_type_is_refused(tmp_path, batches):
    """`true` equals 1 in Python: a stage count of true after the same list with 1 is still refused."""
    path = build_large_trace(str(tmp_path / "t"), 3_000)

    def same_but_bool(entries):
        for e in entries[1990:2001]:
            e["sampling"]["stages"][0]["kept"] = 1
        entries[2000]["sampling"]["stages"][0]["kept"] = True

    edit_entries(path, same_but_bool)
    with pytest.raises(TraceError, match=r"steps\[2000\]\.sampling\.stages\[0\]\.kept"):
        load_trace(path)


def test_every_entry_reads_back_as_its_line_parses(tmp_path, batches):
    """Keys in their order, 1 and 1.0 and true told apart, whichever way a batch of lines is read: a
    line shaped unlike the lines before it (keys reordered, an integer where they hold floats, a number
    written another way) among lines of one shape."""
    path = build_large_trace(str(tmp_path / "t"), 3_000)

    def unlike(entries):
        entries[1700] = dict(reversed(list(entries[1700].items())))
        entries[1800]["sampling"]["top_p"] = 1e-05
        entries[1900]["sampling"]["min_p"] = 0
        entries[2100]["token"]["special"] = True
        entries[2200]["sampling"]["stages"] = [{"kept": 7, "name": "raw"}]

    edit_entries(path, unlike)
    trace = load_trace(path)
    lines = _lines(path)
    got = [json.dumps(e) for e in trace.manifest["steps"]]
    assert got == [json.dumps(json.loads(unstamp(line, "l"))) for line in lines]
    assert list(trace.manifest["steps"][1700])[0] == "aliases" and trace.manifest["steps"][1900]["sampling"]["min_p"] == 0


@pytest.mark.parametrize("edit", [
    lambda e: e.update(aliases=[]),
    lambda e: e.update(aliases={"blocks.0.hook_resid_pre": 3}),
    lambda e: e.update(nonfinite=[1]),
    lambda e: e.update(nonfinite={}),
    lambda e: e["sampling"].update(stages={}),
    lambda e: e["sampling"].update(stages=[{"name": "raw", "kept": 1.0}]),
])
def test_a_container_of_another_type_deep_in_a_long_log_is_refused(tmp_path, batches, edit):
    """Containers that repeat from entry to entry (aliases, nonfinite names, sampling stages) are
    checked whatever the entries before them held."""
    path = build_large_trace(str(tmp_path / "t"), 3_000)
    edit_entries(path, lambda entries: edit(entries[2000]))
    with pytest.raises(TraceError) as want:
        validate_entry(json.loads(unstamp(_lines(path)[2000], "l")), 2000, 2)
    with pytest.raises(TraceError) as got:
        load_trace(path)
    assert str(got.value) == str(want.value) and "steps[2000]." in str(got.value)
