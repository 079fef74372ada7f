"""A trace is read only when it is consistent as a whole: every reproducer below is a copy of the
fixture edited and re-stamped as a hostile writer would (tests/support/trace_edit.py: checksums
and stamps recomputed), so that only the whole-trace rules (tracer/consistency.py) can refuse it,
each in one TraceError line."""

from __future__ import annotations

import errno
import json
import os
import shutil
import zlib

import numpy as np
import pytest

from stepscope.tracer import TraceError, load_trace
from stepscope.tracer.trace_format import step_checksum
from tests.support.paths import FIXTURE
from tests.support.trace_edit import edit_entries, edit_manifest, edit_step_header, rewrite_lens, rewrite_step


@pytest.fixture
def copy(tmp_path):
    dst = str(tmp_path / "t")
    shutil.copytree(FIXTURE, dst)
    return dst


def _read_everything(path: str):
    tr = load_trace(path)
    for step in tr.steps:
        for name in step.names:
            np.asarray(step[name]).sum()
    return tr


def _refused(path: str, match: str) -> str:
    with pytest.raises(TraceError, match=match) as info:
        _read_everything(path)
    text = str(info.value)
    assert "\n" not in text and len(text) < 600
    return text


def test_the_fixture_is_consistent():
    tr = _read_everything(FIXTURE)
    assert len(tr.steps) == tr.generation["max_new_tokens"] == 8 and tr.finished


# -- step count vs finished / stop_reason ------------------------------------------------------------------
def _log_lines(path):
    return open(os.path.join(path, "steps.jsonl"), "rb").read().splitlines(keepends=True)


def test_a_finished_trace_that_lost_its_last_steps_is_refused_as_truncated(copy):
    lines = _log_lines(copy)
    open(os.path.join(copy, "steps.jsonl"), "wb").write(b"".join(lines[:3]))  # head -3 steps.jsonl
    _refused(copy, r"^truncated: 3 of 8 steps")


def test_a_finished_trace_with_a_torn_last_line_is_refused_as_truncated(copy):
    lines = _log_lines(copy)
    open(os.path.join(copy, "steps.jsonl"), "wb").write(b"".join(lines[:-1]) + lines[-1][:40])
    _refused(copy, r"^truncated: 7 of 8 steps")


def test_a_deleted_middle_line_is_refused(copy):
    lines = _log_lines(copy)
    open(os.path.join(copy, "steps.jsonl"), "wb").write(b"".join(lines[:2] + lines[3:]))
    _refused(copy, r"steps\[2\]\.index")


def test_an_unfinished_trace_reads_up_to_its_last_complete_step(copy):
    edit_manifest(copy, lambda m: m.update(finished=False, stop_reason="interrupted"))
    lines = _log_lines(copy)
    open(os.path.join(copy, "steps.jsonl"), "wb").write(b"".join(lines[:3]))
    assert len(_read_everything(copy).steps) == 3


@pytest.mark.parametrize("fields, match", [
    ({"finished": True, "stop_reason": "error"}, "a finished trace cannot have stopped on 'error'"),
    ({"stop_reason": "all"}, r"manifest\.stop_reason: expected one of"),
    ({"stop_reason": "eos"}, r"'eos', but the last token \(\d+\) is not an end-of-sequence token"),
])
def test_stop_reason_must_agree_with_the_steps(copy, fields, match):
    edit_manifest(copy, lambda m: m.update(fields))
    _refused(copy, match)


def test_eos_stop_reason_with_the_eos_token_last_reads(copy):
    edit_manifest(copy, lambda m: m.update(stop_reason="eos", tokenizer=dict(m["tokenizer"], eos_token_ids=[256, 2])))
    edit_entries(copy, lambda es: [es[-1]["token"].update(id=2), es[-1]["sampling"].update(chosen_id=2)])
    assert _read_everything(copy).manifest["stop_reason"] == "eos"


# -- model facts vs array shapes ----------------------------------------------------------------------------
@pytest.mark.parametrize("fact, value, match", [
    ("n_kv_heads", 1, r"'blocks\.0\.attn\.hook_k' has shape \[17, 2, 16\], expected \[T, n_kv_heads, d_head\] with n_kv_heads=1"),
    ("d_head", 8, r"'blocks\.0\.attn\.hook_q' has shape \[17, 4, 16\].*d_head=8"),
    ("d_mlp", 64, r"'blocks\.0\.mlp\.hook_pre' has shape \[17, 128\].*d_mlp=64"),
    ("vocab_size", 300, r"'logits' has shape \[17, 259\].*vocab=300"),
])
def test_model_facts_must_agree_with_the_arrays(copy, fact, value, match):
    edit_manifest(copy, lambda m: m["model"].update({fact: value}))
    _refused(copy, match)


def test_lens_k_larger_than_the_vocabulary_is_refused(copy):
    edit_manifest(copy, lambda m: m["model"]["lens"].update(k=5000))
    _refused(copy, r"manifest\.model\.lens\.k: 5000 is more than the vocabulary \(259 ids\)")


def test_n_kv_heads_must_divide_n_heads(copy):
    edit_manifest(copy, lambda m: m["model"].update(n_kv_heads=3))
    _refused(copy, r"n_kv_heads: 3 does not divide n_heads \(4\)")


# -- key length vs positions ---------------------------------------------------------------------------------
def test_swapped_steps_are_refused_by_their_key_length(copy):
    def swap(es):
        for key in ("file", "bytes", "checksum"):
            es[1][key], es[2][key] = es[2][key], es[1][key]

    edit_entries(copy, swap)
    tr = load_trace(copy)  # the log itself is in order: the step's own arrays give it away on first use
    with pytest.raises(TraceError, match=r"step 1 .*hook_attn_scores' has 19 key columns, expected S=18 for positions \[17, 18\)"):
        tr.steps[1]["blocks.0.attn.hook_pattern"]


@pytest.mark.parametrize("fields, match", [
    ({"attention_sink": True}, r"has 17 key columns, expected S=18 for positions \[0, 17\)"),  # a sink column claimed, none recorded
    ({"sliding_window": 4}, r"has 18 key columns, expected S=4 for positions \[17, 18\) and a window of 4"),
])
def test_sink_and_sliding_window_claims_must_match_the_key_columns(copy, fields, match):
    edit_manifest(copy, lambda m: m["model"].update(fields))
    _refused(copy, match)


# -- names and aliases ----------------------------------------------------------------------------------------
def test_an_alias_to_a_layer_the_model_does_not_have_is_refused(copy):
    edit_entries(copy, lambda es: es[0]["aliases"].update({"blocks.9.hook_resid_pre": "hook_embed"}))
    _refused(copy, r"alias 'blocks\.9\.hook_resid_pre' is not a recorded name of a 2-layer model")


def test_an_alias_to_an_array_of_another_kind_is_refused(copy):
    edit_entries(copy, lambda es: es[0]["aliases"].update({"blocks.0.hook_resid_pre": "logits"}))
    _refused(copy, r"alias 'blocks\.0\.hook_resid_pre' names 'logits', an array of another kind")


def test_fifty_thousand_aliases_are_refused(copy):
    edit_entries(copy, lambda es: es[1]["aliases"].update({f"x{i}": "hook_embed" for i in range(50_000)}))
    _refused(copy, r"more than a 2-layer model records")


def test_fifty_thousand_extra_tensors_are_refused(copy):
    rewrite_step(copy, 1, lambda a: a.update({f"blocks.0.x{i}": np.zeros(1, np.float32) for i in range(50_000)}))
    _refused(copy, r"step 1 .*more than a 2-layer model records")


@pytest.mark.parametrize("old, new", [("hook_embed", "hook_embec"), ("blocks.0.hook_mlp_out", "blocks.0.hook_mlp_ovt"),
                                      ("logits", "logit_lens.probs")])
def test_a_bit_flipped_name_is_refused(copy, old, new):
    rewrite_step(copy, 2, lambda a: a.update({new: a.pop(old)}))
    with pytest.raises(TraceError):
        _read_everything(copy)


def test_names_the_record_patterns_exclude_are_refused(copy):
    edit_manifest(copy, lambda m: m.update(record=["blocks.*.attn.hook_pattern"]))
    _refused(copy, r"'hook_embed' is recorded, but the manifest's record patterns exclude it")


# -- ids within the vocabulary, sampler records vs tokens ---------------------------------------------------------
@pytest.mark.parametrize("edit, match", [
    (lambda m: m["tokens"][3].update(id=5000), r"manifest\.tokens\[3\]\.id: 5000 is outside the vocabulary \(259 ids\)"),
    (lambda m: m["tokens"][3].update(position=9), r"manifest\.tokens\[3\]\.position: expected 3, got 9"),
    (lambda m: m["tokenizer"].update(eos_token_ids="all"), r"manifest\.tokenizer\.eos_token_ids: expected a list of token ids"),
    (lambda m: m["tokenizer"].update(special_ids=[256, 10**6]), r"manifest\.tokenizer\.special_ids: expected a list of token ids below 259"),
    (lambda m: m["tokenizer"].update(bos_token_id=-1), r"manifest\.tokenizer\.bos_token_id: expected a token id below 259"),
    (lambda m: m["dtype"].update(stored="int8"), r"manifest\.dtype\.stored: expected"),
    (lambda m: m["model"].update(n_ctx=20), r"steps\[7\]\.positions: ends at 24, past the model's context \(n_ctx 20\)"),
    (lambda m: m["model"]["params"].update(total=5), r"manifest\.model\.params\.total: 5 is not the sum of its parts \(107200\)"),
])
def test_manifest_fields_must_agree_with_each_other(copy, edit, match):
    edit_manifest(copy, edit)
    _refused(copy, match)


def test_a_step_token_outside_the_vocabulary_is_refused(copy):
    edit_entries(copy, lambda es: [es[4]["token"].update(id=5000), es[4]["sampling"].update(chosen_id=5000)])
    _refused(copy, r"manifest\.tokens\[21\]\.id: 5000 is outside the vocabulary")


def test_a_token_other_than_the_sampler_chose_is_refused(copy):
    edit_entries(copy, lambda es: es[2]["token"].update(id=3))
    _refused(copy, r"steps\[2\]\.sampling\.chosen_id: 25, but the step's token is 3")


def test_top1_outside_the_vocabulary_is_refused(copy):
    edit_entries(copy, lambda es: es[5]["sampling"].update(top1_id=10**9))
    _refused(copy, r"steps\[5\]\.sampling\.top1_id: 1000000000 is outside the vocabulary")


@pytest.mark.parametrize("bad", [10**9, -1])
def test_candidate_ids_outside_the_vocabulary_are_refused(copy, bad):
    def edit(a):
        a["sample.candidate_ids"] = a["sample.candidate_ids"].copy()
        a["sample.candidate_ids"][3] = bad

    rewrite_step(copy, 1, edit)
    _refused(copy, rf"'sample\.candidate_ids' holds {bad}, outside \[0, 259\)")


def test_arrays_stored_in_another_dtype_than_the_manifest_says_are_refused(copy):
    edit_manifest(copy, lambda m: m["dtype"].update(stored="float16"))
    _refused(copy, r"'hook_embed' is stored as F32, the manifest says float16")


def test_a_header_dtype_that_is_a_list_is_one_line(copy):
    edit_step_header(copy, 1, lambda h: h["hook_embed"].update(dtype=["F32"]))
    _refused(copy, r"step 1 .*corrupted step file \(bad entry for 'hook_embed'\)")


# -- lens.safetensors ---------------------------------------------------------------------------------------------
def _lens_ids(path):
    return load_trace(path).steps[0]["logit_lens.ids"]


def test_lens_file_with_its_checksum_reads_identically(copy):
    rewrite_lens(copy, lambda a: None)
    assert load_trace(copy).model["lens"]["checksum"].startswith("crc32:")
    np.testing.assert_array_equal(_lens_ids(copy), _lens_ids(FIXTURE))


def test_a_bit_flip_in_a_checksummed_lens_file_is_refused(copy):
    rewrite_lens(copy, lambda a: None)
    path = os.path.join(copy, "lens.safetensors")
    raw = bytearray(open(path, "rb").read())
    raw[-100] ^= 0x10
    open(path, "wb").write(bytes(raw))
    with pytest.raises(TraceError, match=r"lens\.safetensors: checksum mismatch"):
        _lens_ids(copy)


def test_a_lens_checksum_the_manifest_does_not_match_is_refused(copy):
    raw = open(os.path.join(copy, "lens.safetensors"), "rb").read()
    wrong = step_checksum(raw[:16], [zlib.crc32(raw)])
    edit_manifest(copy, lambda m: m["model"]["lens"].update(checksum=wrong))
    with pytest.raises(TraceError, match=r"lens\.safetensors: checksum mismatch"):
        _lens_ids(copy)


@pytest.mark.parametrize("edit, match", [
    (lambda a: a.update({"unembed.W_U": a["unembed.W_U"].astype(np.int32)}), r"'unembed\.W_U' has dtype int32, expected floats"),
    (lambda a: a.update({"unembed.W_U": np.full_like(a["unembed.W_U"], np.nan)}), r"'unembed\.W_U' holds NaN or inf"),
    (lambda a: a.pop("unembed.W_U"), r"lacks ln_final\.w or unembed\.W_U"),
    (lambda a: a.update({"unembed.W_U": a["unembed.W_U"][:, :100].copy()}), r"'unembed\.W_U' has shape \[64, 100\], expected \[64, 259\]"),
    (lambda a: a.update({"ln_final.w": a["ln_final.w"][:10].copy()}), r"'ln_final\.w' has shape \[10\], expected \[64\]"),
    (lambda a: a.update({"blocks.7.attn.W_O": np.zeros((4, 16, 64), np.float32)}), r"names layer 7 of a 2-layer model"),
    (lambda a: a.update({"evil": np.zeros(3, np.float32)}), r"'evil' is not a lens array"),
])
def test_a_lens_file_that_does_not_fit_the_model_is_one_line(copy, edit, match):
    rewrite_lens(copy, edit)
    with pytest.raises(TraceError, match=match):
        _lens_ids(copy)


def test_an_old_lens_file_without_a_checksum_is_still_validated(copy):
    rewrite_lens(copy, lambda a: a.pop("ln_final.w"), checksum=False)
    assert "checksum" not in load_trace(copy).model["lens"]  # traces written before the checksum still open
    with pytest.raises(TraceError, match=r"lacks ln_final\.w"):
        _lens_ids(copy)


def test_view_of_a_lens_without_its_unembedding_exits_in_one_line(copy, capsys):
    from stepscope.cli.main import main

    rewrite_lens(copy, lambda a: a.pop("unembed.W_U"))
    tr = load_trace(copy)
    with pytest.raises(TraceError):
        tr.steps[0].names  # the lens' names are listed from the lens file
    code = main(["info", copy])  # info reads the manifest only: the trace still opens
    assert code == 0


# -- the writer ------------------------------------------------------------------------------------------------
def test_a_new_trace_records_its_lens_checksum(tmp_path):
    from stepscope.tracer.session import GenerationSettings, LiveSession
    from tests.support.tiny_models import byte_tokenizer, tiny_model

    out = str(tmp_path / "t")
    s = LiveSession(tiny_model("llama"), byte_tokenizer(), "hi", GenerationSettings(max_new_tokens=2), out=out)
    while s.step() is not None:
        pass
    s.close()
    manifest = json.loads(open(os.path.join(out, "manifest.json"), "rb").read().rstrip())
    assert manifest["model"]["lens"]["checksum"].startswith("crc32:")
    tr = _read_everything(out)
    assert tr.steps[1]["logit_lens.ids"].shape == (2, 10)


def test_a_disk_full_before_the_first_step_marks_the_trace_error(tmp_path, monkeypatch):
    import stepscope.tracer.writer as writer_mod
    from stepscope.tracer.session import GenerationSettings, LiveSession
    from stepscope.tracer.trace_format import TraceWriteError
    from tests.support.tiny_models import byte_tokenizer, tiny_model

    def full(*_args, **_kw):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(writer_mod, "write_safetensors", full)  # the lens file, written before any step
    out = str(tmp_path / "t")
    with pytest.raises(TraceWriteError, match="disk full"):
        LiveSession(tiny_model("llama"), byte_tokenizer(), "hi", GenerationSettings(max_new_tokens=2), out=out)
    tr = load_trace(out)
    assert len(tr.steps) == 0 and tr.manifest["stop_reason"] == "error" and not tr.finished


# -- cheap at every open ------------------------------------------------------------------------------------------
def test_the_whole_trace_check_is_vectorised():
    import time

    from stepscope.tracer.consistency import check_trace
    from stepscope.tracer.reader import read_manifest

    m = read_manifest(FIXTURE)
    n = 200_000
    entries, tokens = m["steps"], m["tokens"][: m["prompt_len"]]
    big = dict(m, steps=[dict(entries[1 + i % 7]) for i in range(n)], finished=False, stop_reason=None)
    big["tokens"] = tokens + [dict(e["token"]) for e in big["steps"]]
    for i, t in enumerate(big["tokens"]):
        t["position"] = i
    for i, e in enumerate(big["steps"]):
        e["positions"] = [m["prompt_len"] + i - 1, m["prompt_len"] + i]
    big["model"] = dict(m["model"], n_ctx=None)
    t0 = time.process_time()  # CPU time: the machine may be shared
    check_trace(big)
    assert time.process_time() - t0 < 0.5
