"""Seeded fuzzing of the fixture trace: every mutant is a clean TraceError or an identical read.

Every mutant, of a step file (bytes flipped, truncated, extended, header values changed), of
manifest.json or of steps.jsonl (values changed or deleted, bytes inserted), or of the directory
(symlinks, FIFOs, missing files), must be rejected with one line or read identically: manifest,
entries and every array. The JSON files carry crc32 stamps, so an edit that stays schema-valid is
still caught. Nothing else: no other exception, no hang (alarm), no file opened outside the
mutant's directory (audit hook), no memory blow-up (max RSS).
"""

from __future__ import annotations

import json
import math
import os
import random
import resource
import shutil
import signal
import struct
import sys

import numpy as np
import pytest

from stepscope.tracer import TraceError, load_trace
from tests.support.paths import FIXTURE
from tests.support.trace_edit import edit_entries

N_MUTANTS = 400
HOSTILE_VALUES = [None, -1, 0, 10**18, -(10**18), 1.5, float("nan"), float("inf"), "", "x" * 5000, "\x1b]0;t\x07",
                  [], {}, True, False, [1, 2, 3], {"a": 1}, "../../etc/passwd", "/dev/zero", 2**70]


class Hang(Exception):
    pass


def _alarm(*_):
    raise Hang()


def _snapshot(path: str) -> dict:
    tr = load_trace(path)
    arrays = {(s.index, n): s[n].tobytes() + str(s[n].dtype).encode() + str(s.shape(n)).encode() for s in tr.steps for n in s.names}
    manifest = {**tr.manifest, "steps": list(tr.manifest["steps"]), "tokens": list(tr.tokens)}  # sequences, read whole
    return {"manifest": json.dumps(manifest, sort_keys=True, default=str), "arrays": arrays}


def _walk(obj, path=()):
    """Every (container, key) pair of a JSON document."""
    if isinstance(obj, dict):
        for k, v in obj.items():
            yield obj, k
            yield from _walk(v, path + (k,))
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            yield obj, i
            yield from _walk(v, path + (i,))


def _mutate_json(rng: random.Random, doc):
    spots = list(_walk(doc))
    container, key = rng.choice(spots)
    op = rng.random()
    if op < 0.25 and isinstance(container, dict):
        del container[key]
    else:
        container[key] = rng.choice(HOSTILE_VALUES)
    return doc


def _dump(doc) -> bytes:
    """Serialised as the writer does (compact, UTF-8), keeping the old "crc" member last: an edit
    in place whose stamp no longer matches, so the checksum, not the formatting, must catch it."""
    return json.dumps(doc, allow_nan=True, ensure_ascii=False, separators=(",", ":")).encode()


def _mutate(rng: random.Random, d: str) -> str:
    """Apply one mutation in directory d; returns its family ("step" or "json", for messages)."""
    steps = sorted(f for f in os.listdir(d) if f.startswith("step_"))
    kind = rng.choice(["flip", "flip", "truncate", "extend", "header", "manifest", "manifest", "log", "log", "logtext", "fs"])
    if kind in ("flip", "truncate", "extend", "header"):
        path = os.path.join(d, rng.choice(steps))
        raw = bytearray(open(path, "rb").read())
        if kind == "flip":
            for _ in range(rng.randint(1, 4)):
                raw[rng.randrange(len(raw))] ^= 1 << rng.randrange(8)
        elif kind == "truncate":
            raw = raw[: rng.randrange(len(raw))]
        elif kind == "extend":
            raw += bytes(rng.randrange(256) for _ in range(rng.randint(1, 64)))
        else:
            (n,) = struct.unpack("<Q", raw[:8])
            header = json.loads(raw[8 : 8 + n])
            name = rng.choice([k for k in header if k != "__metadata__"])
            field = rng.choice(["dtype", "shape", "data_offsets"])
            if field == "dtype":
                header[name]["dtype"] = rng.choice(["F32", "I32", "F16", "I64", "U8", "BOOL", "F64", "X9"])
            elif header[name][field]:
                i = rng.randrange(len(header[name][field]))
                header[name][field][i] = rng.choice([header[name][field][i] + rng.choice([-1, 1, 4]), -1, 0, 2**40])
            new = json.dumps(header).encode()
            new += b" " * (-len(new) % 8)
            raw = bytearray(struct.pack("<Q", len(new)) + new + raw[8 + n :])
        open(path, "wb").write(bytes(raw))
        _fix_sizes(d)  # keep the recorded sizes right, so the file's content is what gets tested
        return "step"
    if kind == "manifest":
        path = os.path.join(d, "manifest.json")
        doc = _mutate_json(rng, json.loads(open(path, "rb").read()))
        open(path, "wb").write(_dump(doc))
        return "json"
    if kind == "log":
        path = os.path.join(d, "steps.jsonl")
        lines = open(path, "rb").read().splitlines()
        i = rng.randrange(len(lines))
        lines[i] = _dump(_mutate_json(rng, json.loads(lines[i])))
        open(path, "wb").write(b"\n".join(lines) + b"\n")
        return "json"
    if kind == "logtext":
        path = os.path.join(d, rng.choice(["steps.jsonl", "manifest.json"]))
        raw = bytearray(open(path, "rb").read())
        pos = rng.randrange(len(raw))
        raw[pos : pos + 1] = rng.choice([b"", b"\x00", b"{", b"]", b'"', b"\xff", b"9" * 400, b"[" * 5000])
        open(path, "wb").write(bytes(raw))
        return "json"
    victim = os.path.join(d, rng.choice(steps + ["manifest.json", "steps.jsonl"]))
    os.unlink(victim)
    op = rng.choice(["symlink", "fifo", "dir", "missing", "devzero"])
    if op == "symlink":
        os.symlink(os.path.abspath(os.path.join(FIXTURE, os.path.basename(victim))), victim)
    elif op == "fifo":
        os.mkfifo(victim)
    elif op == "dir":
        os.mkdir(victim)
    elif op == "devzero":
        os.symlink("/dev/zero", victim)
    return "step"


def _fix_sizes(d: str) -> None:
    """Re-record each step file's size (entries re-stamped), so the file's content is what gets tested."""
    if os.path.exists(os.path.join(d, "steps.jsonl")):
        edit_entries(d, lambda es: [e.update(bytes=os.path.getsize(f)) for e in es if os.path.isfile(f := os.path.join(d, e["file"]))])


def test_fuzzed_traces_are_rejected_cleanly_or_read_identically(tmp_path):
    assert load_trace(FIXTURE).manifest["schema_version"] >= 2  # checksums are what this test relies on
    base = _snapshot(FIXTURE)
    for name in ("manifest.json", "steps.jsonl"):  # re-serialising is byte-exact: a mutant differs by its mutation only
        lines = open(os.path.join(FIXTURE, name), "rb").read().rstrip(b" ").splitlines()
        assert all(_dump(json.loads(line)) == line for line in lines)
    rng = random.Random(20261129)
    opened: list[str] = []
    current = {"dir": None}

    def audit(event, args):
        if event == "open" and current["dir"] and isinstance(args[0], (str, bytes)):
            opened.append(os.fsdecode(args[0]))

    sys.addaudithook(audit)
    counts = {"rejected": 0, "identical": 0}
    crc_caught = 0  # JSON mutants refused by a crc32 stamp mismatch
    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    previous = signal.signal(signal.SIGALRM, _alarm)
    try:
        for i in range(N_MUTANTS):
            d = str(tmp_path / f"m{i}")
            shutil.copytree(FIXTURE, d)
            family = _mutate(rng, d)
            opened.clear()
            current["dir"] = d
            signal.alarm(10)
            try:
                got = _snapshot(d)
            except TraceError as exc:
                assert "\n" not in str(exc) and len(str(exc)) < 600, str(exc)
                counts["rejected"] += 1
                crc_caught += family == "json" and "checksum mismatch" in str(exc)
                got = None
            except Hang:
                pytest.fail(f"mutant {i} ({family}) hung")
            except Exception as exc:  # anything but a TraceError is a bug
                pytest.fail(f"mutant {i} ({family}) raised {type(exc).__name__}: {exc}")
            finally:
                signal.alarm(0)
                current["dir"] = None
            for p in opened:
                assert p == d or os.path.dirname(p) == "" , f"mutant {i} opened {p}"
            if got is not None:
                assert got == base, f"mutant {i} ({family}) loaded with different content"
                counts["identical"] += 1
            shutil.rmtree(d)
    finally:
        signal.signal(signal.SIGALRM, previous)
        current["dir"] = None
    growth_mb = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss0) / 1024
    print(f"fuzz: {counts}, JSON mutants caught by their crc32 stamp: {crc_caught}, max RSS growth {growth_mb:.0f} MiB")
    assert crc_caught > N_MUTANTS // 10
    assert growth_mb < 400
    assert counts["rejected"] > N_MUTANTS // 2 and sum(counts.values()) == N_MUTANTS
    assert not math.isnan(growth_mb) and np.isfinite(growth_mb)


# -- re-stamped mutants: a hostile writer's edits, every checksum and stamp recomputed ------------------------
NEAR = [lambda v: v + 1, lambda v: v - 1, lambda v: v * 2, lambda v: 0, lambda v: -v, lambda v: 10**9]


def _near_or_hostile(rng: random.Random, value):
    """A value close to the real one (what passes the schema and only consistency can refuse) or a hostile one."""
    if type(value) is int and rng.random() < 0.7:
        return rng.choice(NEAR)(value)
    if type(value) is float and rng.random() < 0.5:
        return value * rng.choice([0.5, 2.0, -1.0, 1e6])
    if type(value) is str and rng.random() < 0.5:
        return rng.choice(["eos", "error", "float16", "int8", "all", value[:-1] + "x" if value else "x", "blocks.9.hook_embed"])
    return rng.choice(HOSTILE_VALUES)


def _mutate_restamped(rng: random.Random, doc) -> None:
    container, key = rng.choice(list(_walk(doc)))
    if key == "crc":
        return
    if rng.random() < 0.2 and isinstance(container, dict):
        del container[key]
    else:
        container[key] = _near_or_hostile(rng, container[key])


def _restamped(rng: random.Random, d: str) -> str:
    """One hostile writer's edit of the trace in d, re-stamped; returns its family (for messages)."""
    from tests.support.trace_edit import edit_manifest, edit_step_header, rewrite_lens, rewrite_step

    kind = rng.choice(["manifest", "manifest", "model", "entry", "entry", "header", "arrays", "lens", "lines"])
    index = rng.randrange(8)
    if kind == "manifest":
        edit_manifest(d, lambda m: _mutate_restamped(rng, m))
    elif kind == "model":  # the facts the arrays are checked against
        key = rng.choice(["n_layers", "d_model", "n_heads", "n_kv_heads", "d_head", "d_mlp", "vocab_size", "n_ctx",
                          "sliding_window", "attention_sink", "lens", "params"])
        edit_manifest(d, lambda m: m["model"].update({key: _near_or_hostile(rng, m["model"].get(key))}))
    elif kind == "entry":
        edit_entries(d, lambda es: _mutate_restamped(rng, es[index]))
    elif kind == "lines":  # lines lost, repeated or reordered
        path = os.path.join(d, "steps.jsonl")
        lines = open(path, "rb").read().splitlines(keepends=True)
        op = rng.choice(["head", "drop", "dup", "swap"])
        if op == "head":
            lines = lines[: rng.randrange(len(lines))]
        elif op == "drop":
            del lines[index]
        elif op == "dup":
            lines.insert(index, lines[index])
        else:
            j = rng.randrange(8)
            lines[index], lines[j] = lines[j], lines[index]
        open(path, "wb").write(b"".join(lines))
    elif kind == "header":
        def edit(h):
            name = rng.choice([k for k in h if k != "__metadata__"])
            field = rng.choice(["dtype", "shape", "name"])
            if field == "dtype":
                h[name]["dtype"] = rng.choice(["F16", "I32", "I64", "U8", "BOOL", "F64", ["F32"], None, 7])
            elif field == "shape" and h[name]["shape"]:
                h[name]["shape"] = list(reversed(h[name]["shape"]))
            else:
                h[name[:-1] + chr(ord(name[-1]) ^ 1)] = h.pop(name)  # a bit-flipped name

        edit_step_header(d, index, edit)
    elif kind == "arrays":
        def edit(a):
            name = rng.choice(sorted(a))
            op = rng.choice(["drop", "rename", "values", "dtype", "extra"])
            if op == "drop":
                del a[name]
            elif op == "rename":
                a[rng.choice(["blocks.5.hook_resid_post", "hook_pos_embed", "logit_lens.ids", "x"])] = a.pop(name)
            elif op == "values":
                a[name] = a[name].copy()
                a[name].flat[rng.randrange(a[name].size)] = rng.choice([-1, 10**6, 259, 1])
            elif op == "dtype":
                a[name] = a[name].astype(rng.choice([np.float16, np.float64, np.int32, np.int64]))
            else:
                a[f"blocks.{rng.randrange(3)}.mlp.hook_expert_ids"] = np.zeros((1, 2), np.int64)

        rewrite_step(d, index, edit)
    else:
        def edit(a):
            name = rng.choice(sorted(a))
            op = rng.choice(["drop", "nan", "dtype", "shape", "extra"])
            if op == "drop":
                del a[name]
            elif op == "nan":
                a[name] = a[name].copy()
                a[name].flat[0] = np.nan
            elif op == "dtype":
                a[name] = a[name].astype(rng.choice([np.float16, np.int32, np.uint8]))
            elif op == "shape":
                a[name] = np.ascontiguousarray(a[name].reshape(-1)[: max(1, a[name].size // 2)])
            else:
                a["blocks.0.attn.W_O"] = np.zeros((4, 16, 64), np.float32)

        rewrite_lens(d, edit)
    return kind


def _independently_consistent(tr) -> None:
    """What a trace that opened must satisfy, checked here without tracer/consistency.py."""
    model, vocab = tr.model, tr.model["vocab_size"]
    assert all(0 <= t["id"] < vocab for t in tr.tokens)
    assert all(s.sampling.get("chosen_id", s.token["id"]) == s.token["id"] for s in tr.steps)
    if tr.finished and tr.manifest.get("stop_reason") == "max_new_tokens":
        assert len(tr.steps) >= min(tr.generation["max_new_tokens"], (model.get("n_ctx") or 10**9) - tr.prompt_len)
    for s in tr.steps:
        start, end = s.positions
        for name in s.names:
            shape = s.shape(name)
            if name == "logits":
                assert shape == (end - start, vocab)
            if name.endswith("attn.hook_k"):
                assert shape[1:] == (model["n_kv_heads"], model["d_head"])
            if name.endswith("attn.hook_pattern") and not model.get("sliding_window") and not model.get("attention_sink"):
                assert shape[-1] == end
            if name.endswith("ids"):
                ids = np.asarray(s[name])
                assert ids.size == 0 or (ids.min() >= 0 and ids.max() < vocab)


N_RESTAMPED = 300


def test_restamped_mutants_are_refused_read_identically_or_consistent(tmp_path):
    base = _snapshot(FIXTURE)
    rng = random.Random(20261205)
    counts = {"rejected": 0, "identical": 0, "consistent": 0}
    previous = signal.signal(signal.SIGALRM, _alarm)
    try:
        for i in range(N_RESTAMPED):
            d = str(tmp_path / f"r{i}")
            shutil.copytree(FIXTURE, d)
            try:
                family = _restamped(rng, d)
            except (TypeError, ValueError, KeyError, IndexError, OverflowError):
                shutil.rmtree(d)  # an edit the helpers cannot write (e.g. a float16 of 10**6): not a mutant
                continue
            signal.alarm(10)
            try:
                got = _snapshot(d)
                tr = load_trace(d)
            except TraceError as exc:
                assert "\n" not in str(exc) and len(str(exc)) < 600, str(exc)
                counts["rejected"] += 1
                got = None
            except Hang:
                pytest.fail(f"re-stamped mutant {i} ({family}) hung")
            except Exception as exc:  # anything but a TraceError is a bug
                pytest.fail(f"re-stamped mutant {i} ({family}) raised {type(exc).__name__}: {exc}")
            finally:
                signal.alarm(0)
            if got is not None:
                if got == base:
                    counts["identical"] += 1
                else:
                    try:
                        _independently_consistent(tr)
                    except AssertionError:
                        pytest.fail(f"re-stamped mutant {i} ({family}) read as an inconsistent trace")
                    counts["consistent"] += 1
            shutil.rmtree(d)
    finally:
        signal.signal(signal.SIGALRM, previous)
    print(f"re-stamped fuzz: {counts}")
    assert counts["rejected"] > N_RESTAMPED // 3
