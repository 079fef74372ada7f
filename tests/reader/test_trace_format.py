"""Trace format 2: append-only step log, aliases, checksums, schema-1 compatibility, omitted rows."""

from __future__ import annotations

import os
import shutil

import numpy as np
import pytest
from safetensors import safe_open

from stepscope.tracer import TraceError, load_trace
from stepscope.tracer.session import GenerationSettings, LiveSession
from stepscope.tracer.writer import TraceWriter, write_step_file
from tests.support.paths import FIXTURE, FIXTURE_V1
from tests.support.synthetic_trace import VOCAB
from tests.support.tiny_models import byte_tokenizer, tiny_model
from tests.support.trace_edit import edit_manifest


def _manifest(prompt_len: int = 3) -> dict:
    from tests.support.synthetic_trace import model_facts

    return {
        "schema": "stepscope.trace", "schema_version": 2, "model": model_facts(), "prompt": "abc", "prompt_len": prompt_len,
        "generation": {"do_sample": False}, "dtype": {"model": "float32", "stored": "float32"},
        "tokens": [{"id": i, "text": "a", "special": False, "position": i} for i in range(prompt_len)],
        "finished": False, "stop_reason": None,
    }


def _entry(i: int, prompt_len: int = 3) -> tuple[dict, dict]:
    token = {"id": 5, "text": "x", "special": False, "position": prompt_len + i}
    pos = [0, prompt_len] if i == 0 else [prompt_len + i - 1, prompt_len + i]
    return {"index": i, "kind": "prefill" if i == 0 else "decode", "positions": pos, "token": token,
            "sampling": {"chosen_id": 5, "chosen_prob": 0.5}}, token


@pytest.fixture(scope="module")
def tiny_trace(tmp_path_factory):
    out = str(tmp_path_factory.mktemp("tiny") / "t")
    s = LiveSession(tiny_model("llama"), byte_tokenizer(), "hello world", GenerationSettings(max_new_tokens=3), out=out)
    while s.step() is not None:
        pass
    s.close()
    return out


def test_appending_a_step_never_rewrites_the_manifest(tmp_path):
    out = str(tmp_path / "log")
    w = TraceWriter(out, _manifest(), background=False)
    manifest = os.path.join(out, "manifest.json")
    inode, size = os.stat(manifest).st_ino, os.path.getsize(manifest)
    log_sizes = []
    for i in range(40):
        entry, token = _entry(i)
        w.add_step({"logits": np.full((entry["positions"][1] - entry["positions"][0], VOCAB), i, np.float32)}, entry, token)
        log_sizes.append(os.path.getsize(os.path.join(out, "steps.jsonl")))
    assert os.stat(manifest).st_ino == inode and os.path.getsize(manifest) == size  # O(1): untouched per step
    growth = np.diff(log_sizes[5:])
    assert growth.max() - growth.min() <= 4  # one line per step, same size whatever the count
    w.close(finished=True, stop_reason="max_new_tokens")
    tr = load_trace(out)
    assert len(tr.steps) == 40 and len(tr.tokens) == 43 and tr.finished
    assert float(tr.steps[39]["logits"][0, 0]) == 39.0


def test_torn_last_line_is_ignored_and_a_damaged_middle_line_is_an_error(tiny_trace, tmp_path):
    bad = str(tmp_path / "torn")
    shutil.copytree(tiny_trace, bad)
    log = os.path.join(bad, "steps.jsonl")
    lines = open(log, "rb").read().splitlines(keepends=True)
    with open(log, "wb") as fh:
        fh.write(b"".join(lines[:-1]) + lines[-1][: len(lines[-1]) // 2])  # a write cut short
    with pytest.raises(TraceError, match=f"truncated: {len(lines) - 1} of {len(lines)} steps"):
        load_trace(bad)  # a finished trace cannot have lost its last step to a torn write
    edit_manifest(bad, lambda m: m.update(finished=False, stop_reason="interrupted"))  # a run cut short
    tr = load_trace(bad)
    assert len(tr.steps) == len(lines) - 1 and len(tr.tokens) == tr.prompt_len + len(lines) - 1
    with open(log, "wb") as fh:
        fh.write(lines[0] + b"{not json\n" + b"".join(lines[2:]))
    with pytest.raises(TraceError, match="steps.jsonl line 2"):
        load_trace(bad)


def _sub_once(path: str, old: bytes, new: bytes, line: int | None = None) -> None:
    """Replace the first `old` (in 0-based `line` when given) by `new`, byte for byte."""
    raw = open(path, "rb").read()
    if line is None:
        assert old in raw
        raw = raw.replace(old, new, 1)
    else:
        lines = raw.split(b"\n")
        assert old in lines[line]
        lines[line] = lines[line].replace(old, new, 1)
        raw = b"\n".join(lines)
    open(path, "wb").write(raw)


def test_schema_valid_edits_of_the_json_files_fail_their_checksum(tmp_path):
    from tests.support.trace_edit import edit_entries, edit_manifest

    base = load_trace(FIXTURE)
    rank = base.steps[2].sampling["chosen_rank"]
    cases = {  # each edit is valid JSON and valid under the schema: only the crc32 can catch it
        "log": ("steps.jsonl", b'"chosen_rank":%d,' % rank, b'"chosen_rank":%d,' % (rank + 1), 2, "steps.jsonl line 3: checksum mismatch"),
        "manifest": ("manifest.json", b'"name":"tiny-llama-gqa"', b'"name":"tiny-llama-gqb"', None, "manifest.json: checksum mismatch"),
        "log stamp": ("steps.jsonl", b',"crc":"', b',"CRC":"', 0, "steps.jsonl line 1: no checksum"),
        "manifest stamp": ("manifest.json", b',"crc":"', b',"CRC":"', None, "manifest.json: no checksum"),
    }
    for case, (name, old, new, line, message) in cases.items():
        bad = str(tmp_path / case.replace(" ", "_"))
        shutil.copytree(FIXTURE, bad)
        _sub_once(os.path.join(bad, name), old, new, line)
        with pytest.raises(TraceError, match=message):
            load_trace(bad)
    # the same edits re-stamped (as a deliberate editor could) load, with the edited values:
    # the checksum was the only thing refusing them
    edited = str(tmp_path / "restamped")
    shutil.copytree(FIXTURE, edited)
    edit_entries(edited, lambda es: es[2]["sampling"].update(chosen_rank=rank + 1))
    edit_manifest(edited, lambda m: m["model"].update(name="tiny-llama-gqb"))
    tr = load_trace(edited)
    assert tr.steps[2].sampling["chosen_rank"] == rank + 1 and tr.model["name"] == "tiny-llama-gqb"


def test_the_last_log_line_whole_without_newline_counts_damaged_after_its_stamp_is_an_error(tmp_path):

    n = len(load_trace(FIXTURE).steps)
    for tail, outcome in ((b"", n), (b"{", "steps.jsonl line %d: bytes after its checksum" % n), (b"\x00", "line %d: bytes after" % n)):
        bad = str(tmp_path / f"t{len(tail)}{tail[:1].hex()}")
        shutil.copytree(FIXTURE, bad)
        log = os.path.join(bad, "steps.jsonl")
        raw = open(log, "rb").read()
        open(log, "wb").write(raw[:-1] + tail)  # the final newline replaced
        if isinstance(outcome, int):
            assert len(load_trace(bad).steps) == outcome  # a whole stamped entry: only its newline is missing
        else:
            with pytest.raises(TraceError, match=outcome):
                load_trace(bad)


def test_schema_1_trace_opens_with_norm_output_under_hook_out():
    tr = load_trace(FIXTURE_V1)
    assert tr.manifest["schema_version"] == 1 and len(tr.steps) == 8 and len(tr.tokens) == tr.prompt_len + 8
    step = tr.steps[0]
    assert "blocks.0.ln1.hook_out" in step and "blocks.0.ln1.hook_normalized" not in step
    with safe_open(step.path, framework="np") as f:  # the v1 file's bytes, exposed under the new name
        np.testing.assert_array_equal(f.get_tensor("blocks.0.ln1.hook_normalized"), step["blocks.0.ln1.hook_out"])
        np.testing.assert_array_equal(f.get_tensor("ln_final.hook_normalized"), step["ln_final.hook_out"])
    for s in tr.steps:
        assert all(s[n].shape == s.shape(n) for n in s.names)


def test_identical_arrays_are_stored_once_and_read_under_both_names(tiny_trace):
    tr = load_trace(tiny_trace)
    step = tr.steps[0]
    assert step.aliases.get("blocks.1.hook_resid_pre") == "blocks.0.hook_resid_post"
    with safe_open(step.path, framework="np") as f:
        stored = set(f.keys())
    assert "blocks.1.hook_resid_pre" not in stored and "blocks.1.hook_resid_pre" in step.names
    pre, post = step["blocks.1.hook_resid_pre"], step["blocks.0.hook_resid_post"]
    assert np.shares_memory(pre, post)  # zero-copy: the same mapped bytes
    # independent check that they are the same tensor: resid_mid + mlp_out of layer 0
    np.testing.assert_allclose(pre, step["blocks.0.hook_resid_mid"] + step["blocks.0.hook_mlp_out"], rtol=1e-5, atol=1e-5)


def test_writer_aliases_only_byte_identical_arrays(tmp_path):
    a = np.arange(12, dtype=np.float32).reshape(3, 4)
    arrays = {"blocks.0.hook_resid_post": a, "blocks.1.hook_resid_pre": a.copy(), "blocks.1.hook_resid_mid": a + 0,
              "blocks.1.hook_attn_out": np.where(a == 0, np.float32(-0.0), a)}  # -0.0 == 0.0, but other bytes
    size, checksum, aliases = write_step_file(str(tmp_path / "step_00000.safetensors"), arrays)
    assert aliases == {"blocks.1.hook_resid_pre": "blocks.0.hook_resid_post", "blocks.1.hook_resid_mid": "blocks.0.hook_resid_post"}
    with safe_open(str(tmp_path / "step_00000.safetensors"), framework="np") as f:
        assert sorted(f.keys()) == ["blocks.0.hook_resid_post", "blocks.1.hook_attn_out"]
        assert np.signbit(f.get_tensor("blocks.1.hook_attn_out")[0, 0])
    assert size == os.path.getsize(tmp_path / "step_00000.safetensors") and checksum.startswith("crc32:")


@pytest.mark.parametrize("big", [False, True])  # a small file is written with writev, a big one past the page cache
def test_staged_step_arrays_write_the_same_file_as_a_plain_dict(tmp_path, big):
    """The session's path (one flat buffer: checksums of its slices, neighbouring arrays written as
    one piece, maps last) stores exactly what a plain dict of the same arrays stores."""
    import torch

    from stepscope.tracer.staging import HostStager
    from stepscope.tracer.step_arrays import StepArrays

    g = torch.Generator().manual_seed(0)
    n = 70_000 if big else 7
    post = torch.randn(1, n, generator=g)
    tensors = {"hook_embed": torch.randn(1, n, generator=g), "blocks.0.attn.hook_attn_scores": torch.tensor([[[0.5, float("-inf")]]]),
               "blocks.0.attn.hook_pattern": torch.tensor([[[1.0, 0.0]]]), "blocks.0.hook_resid_post": post,
               "blocks.1.hook_resid_pre": post, "blocks.1.attn.hook_q": torch.randn(3, 2, generator=g).t(),  # a view; not contiguous
               "blocks.1.hook_resid_mid": post.clone(), "ids": torch.arange(4)}
    arrays = HostStager(torch.device("cpu"), torch.float32).stage(tensors).arrays()
    assert isinstance(arrays, StepArrays) and list(arrays.spans)[-2:] == ["blocks.0.attn.hook_pattern", "blocks.0.attn.hook_attn_scores"]
    arrays["sample.candidate_ids"] = np.arange(5, dtype=np.int64)  # added after staging, like the sampler's
    plain = {k: np.array(v) for k, v in arrays.items()}
    got = write_step_file(str(tmp_path / "a.safetensors"), arrays)
    want = write_step_file(str(tmp_path / "b.safetensors"), plain)
    assert got[2] == want[2] == {"blocks.1.hook_resid_pre": "blocks.0.hook_resid_post", "blocks.1.hook_resid_mid": "blocks.0.hook_resid_post"}
    with safe_open(str(tmp_path / "a.safetensors"), framework="np") as fa, safe_open(str(tmp_path / "b.safetensors"), framework="np") as fb:
        assert sorted(fa.keys()) == sorted(fb.keys()) == sorted(set(plain) - set(got[2]))
        for name in fa.keys():
            np.testing.assert_array_equal(fa.get_tensor(name), fb.get_tensor(name))
            np.testing.assert_array_equal(fa.get_tensor(name), tensors[name].numpy() if name in tensors else plain[name])
    assert got[0] == os.path.getsize(tmp_path / "a.safetensors") and (got[0] > 256 * 1024) == big


def test_step_arrays_is_a_mapping_over_one_buffer():
    from stepscope.tracer.step_arrays import StepArrays

    flat = np.arange(10, dtype=np.float32)
    arrays = StepArrays(flat, ["a", "b"], [(2, 3), (4,)])
    arrays["c"] = np.ones(2, np.int64)
    assert list(arrays) == ["a", "b", "c"] and len(arrays) == 3 and "b" in arrays and "z" not in arrays
    np.testing.assert_array_equal(arrays["a"], flat[:6].reshape(2, 3))
    assert np.shares_memory(arrays["b"], flat) and arrays.spans["b"] == (24, 40)
    arrays["a"] = np.zeros((2, 3), np.float32)  # replaced: it leaves the buffer
    assert "a" not in arrays.spans and list(arrays) == ["b", "c", "a"] and not arrays["a"].any()
    del arrays["b"], arrays["c"]
    assert list(arrays) == ["a"] and dict(arrays.items()).keys() == {"a"}
    with pytest.raises(KeyError):
        arrays["b"]


def test_a_filesystem_without_direct_io_gets_the_same_file(tmp_path, monkeypatch):
    """Big files go past the page cache (O_DIRECT, padded then truncated); where the filesystem
    refuses that (EINVAL at open or at the first write), the same bytes are written normally."""
    import errno

    from stepscope.tracer import direct_io

    arrays = {"logits": np.random.default_rng(0).standard_normal((3, 50_001)).astype(np.float32),
              "hook_embed": np.arange(10, dtype=np.float32).reshape(2, 5)}
    direct = write_step_file(str(tmp_path / "direct.safetensors"), arrays)
    real_open, real_pwrite = os.open, os.pwrite
    for where in ("open", "pwrite"):
        def refuse_open(path, flags, *a, where=where, **k):
            if where == "open" and flags & os.O_DIRECT:
                raise OSError(errno.EINVAL, "Invalid argument")
            return real_open(path, flags, *a, **k)

        def refuse_pwrite(fd, data, offset, where=where):
            if where == "pwrite":
                raise OSError(errno.EINVAL, "Invalid argument")
            return real_pwrite(fd, data, offset)

        monkeypatch.setattr(direct_io.os, "open", refuse_open)
        monkeypatch.setattr(direct_io.os, "pwrite", refuse_pwrite)
        plain = write_step_file(str(tmp_path / f"plain_{where}.safetensors"), arrays)
        monkeypatch.undo()
        assert plain == direct and direct[0] > 256 * 1024
        assert open(tmp_path / f"plain_{where}.safetensors", "rb").read() == open(tmp_path / "direct.safetensors", "rb").read()
    assert not [f for f in os.listdir(tmp_path) if f.startswith(".tmp-")]


def test_checksum_mismatch_fails_that_step_only(tiny_trace, tmp_path):
    bad = str(tmp_path / "flipped")
    shutil.copytree(tiny_trace, bad)
    path = os.path.join(bad, "step_00002.safetensors")
    data = bytearray(open(path, "rb").read())
    data[-3] ^= 0x40  # one bit of one value: same size, header intact
    open(path, "wb").write(bytes(data))
    tr = load_trace(bad)
    step = tr.steps[2]
    assert step.names  # the header is fine
    with open(path, "rb") as fh, safe_open(path, framework="np") as f:  # the tensor holding the flipped byte
        import struct

        n = struct.unpack("<Q", fh.read(8))[0]
        hit = [k for k in f.keys() if step._load_header()[k]["data_offsets"][0] <= len(data) - 3 - 8 - n < step._load_header()[k]["data_offsets"][1]]
    others = [k for k in step.names if k not in hit and step.aliases.get(k) not in hit]
    assert hit and others
    for name in others:  # every other tensor of the step reads (each is checked on its own first read)
        step[name]
    with pytest.raises(TraceError, match="step 2.*checksum mismatch"):
        step[hit[0]]
    np.testing.assert_array_equal(tr.steps[1]["logits"], load_trace(tiny_trace).steps[1]["logits"])


def test_header_tampering_is_caught_by_the_entry_checksum(tiny_trace, tmp_path):
    bad = str(tmp_path / "retitled")
    shutil.copytree(tiny_trace, bad)
    path = os.path.join(bad, "step_00001.safetensors")
    data = open(path, "rb").read()
    i = data.index(b'"F32"')
    open(path, "wb").write(data[:i] + b'"I32"' + data[i + 5 :])  # same size, same data, relabelled
    with pytest.raises(TraceError, match="step 1.*checksum mismatch"):
        load_trace(bad).steps[1].names


def _session(prompt: str, row_limit: int | None, out: str):
    s = LiveSession(tiny_model("llama"), byte_tokenizer(), prompt, GenerationSettings(max_new_tokens=2), out=out)
    s.recorder.row_limit = row_limit
    while s.step() is not None:
        pass
    s.close()
    return load_trace(out)


def test_omitted_attention_rows_are_recomputed_exactly(tmp_path):
    prompt = "the budget keeps the last rows"
    full = _session(prompt, None, str(tmp_path / "full"))
    cut = _session(prompt, 4, str(tmp_path / "cut"))
    step, ref = cut.steps[0], full.steps[0]
    t = step.positions[1]
    name = "blocks.1.attn.hook_pattern"
    assert step.shape(name)[1] == 4 and step.omitted[name]["rows"] == [0, t - 4]
    assert step.omitted["blocks.0.attn.hook_attn_scores"]["rows"] == [0, t - 4]
    for layer in (0, 1):
        for kind, local in (("pattern", "attn.hook_pattern"), ("scores", "attn.hook_attn_scores")):
            got = step.attention_rows(layer, kind, 0, t)
            want = ref[f"blocks.{layer}.{local}"]
            finite = np.isfinite(want)
            assert np.array_equal(finite, np.isfinite(got))  # the same masked cells
            np.testing.assert_allclose(got[finite], want[finite], rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(step.attention_rows(1, "pattern", t - 4, t), step[name])  # stored rows as stored
    assert not cut.steps[1].omitted  # decode steps are never trimmed


def test_writer_uses_the_schema_nan_becomes_null_and_invalid_entries_are_refused(tmp_path):
    from stepscope.tracer import TraceWriteError

    out = str(tmp_path / "w")
    w = TraceWriter(out, _manifest(), background=False)
    entry, token = _entry(0)
    entry["sampling"]["entropy"] = float("nan")  # e.g. NaN logits: the trace must stay readable
    w.add_step({"logits": np.full((3, 8), np.nan, np.float32)}, entry, token)
    entry, token = _entry(1)
    entry["positions"] = "3:4"
    with pytest.raises(TraceWriteError, match=r"invalid step entry: steps\[1\]\.positions"):
        w.add_step({"logits": np.zeros((1, 8), np.float32)}, entry, token)
    w.close()
    tr = load_trace(out)
    assert len(tr.steps) == 1 and tr.steps[0].sampling["entropy"] is None and tr.steps[0].nonfinite == ["logits"]
    assert tr.manifest["stop_reason"] == "error"


def test_info_on_a_damaged_step_log_is_one_line_naming_the_file(tmp_path, capsys):
    from stepscope.cli.main import main

    bad = str(tmp_path / "t")
    shutil.copytree(FIXTURE, bad)
    _sub_once(os.path.join(bad, "steps.jsonl"), b'"chosen_rank":', b'"chosen_rank":1', 0)  # a digit prepended
    assert main(["info", bad]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "steps.jsonl line 1: checksum mismatch" in err
