"""bfloat16 storage: a bfloat16 model recorded with store_dtype="bfloat16" writes safetensors "BF16"
arrays (half the bytes of float32) that the numpy-only reader returns as float32; they are the
model's bfloat16 activations (a float32 recording of the same run, rounded to bfloat16), whether
the step is held whole or streamed to disk, and the lens, attribution and the app read them."""

from __future__ import annotations

import os
import shutil
import time

import numpy as np
import pytest
import torch

import stepscope
from stepscope.cli.main import main
from stepscope.tracer import TraceError, load_trace
from stepscope.tracer.attribution import attribute, read_lens_arrays
from stepscope.tracer.diff import compare, tensor_diff
from stepscope.tracer.export import tl_cache
from stepscope.tracer.lens import LogitLens
from stepscope.tracer.patching import sweep
from stepscope.tracer.safetensors_read import load_safetensors_file, read_safetensors_header, safetensors_arrays
from stepscope.tracer.session import GenerationSettings, LiveSession, resolve_store_dtype
from stepscope.tracer.staging import HostStager, host_array
from stepscope.tracer.trace_format import BF16, widen
from stepscope.tracer.writer import StepStream, write_step_file
from stepscope.tui.app import StepscopeApp
from tests.support.app_harness import run, screen
from tests.support.family_refs import randomize_norms
from tests.support.tiny_models import byte_tokenizer, tiny_model
from tests.support.trace_edit import edit_manifest

PROMPT = "The bfloat16 trace of a tiny model"
BF16_ULP = 2.0**-7  # bfloat16 keeps 8 significant bits: one unit in the last place, relative


def _record(model, out, store_dtype, **options):
    session = LiveSession(model, byte_tokenizer(), PROMPT, GenerationSettings(max_new_tokens=3, chat=False), out=out,
                          store_dtype=store_dtype, **options)
    plan = session.plan
    while session.step() is not None:
        pass
    session.close()
    return load_trace(out), plan


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return randomize_norms(tiny_model("llama")).to(torch.bfloat16)


@pytest.fixture(scope="module")
def traces(model, tmp_path_factory):
    root = tmp_path_factory.mktemp("bf16")
    bf16, _ = _record(model, str(root / "bf16"), "bfloat16")
    f32, _ = _record(model, str(root / "f32"), "float32")
    streamed, plan = _record(model, str(root / "streamed"), "bfloat16", memory_budget=150_000)
    assert plan.streamed  # the prefill went to disk block by block (StepStream)
    return bf16, f32, streamed


def _bf16(a: np.ndarray) -> np.ndarray:
    """float32 values rounded to bfloat16 (torch's round-to-nearest-even), back as float32."""
    return torch.from_numpy(np.array(a, dtype=np.float32)).to(torch.bfloat16).float().numpy()


async def until(pilot, condition, timeout=20.0):
    end = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < end, "timed out"
        await pilot.pause(0.05)


def _stored(step) -> set[str]:
    header, _ = read_safetensors_header(step.path)
    return set(header) | set(step.entry.get("aliases") or {})


def test_auto_keeps_float32_for_bfloat16_models_and_bfloat16_is_asked_for():
    assert resolve_store_dtype(torch.bfloat16, "auto") == torch.float32
    assert resolve_store_dtype(torch.float16, None) == torch.float16
    assert resolve_store_dtype(torch.bfloat16, "bfloat16") == torch.bfloat16
    assert resolve_store_dtype(torch.float32, "bfloat16") == torch.bfloat16


def test_step_files_hold_bf16_and_the_reader_returns_float32(traces):
    bf16, f32, _ = traces
    assert bf16.manifest["dtype"] == {"model": "bfloat16", "stored": "bfloat16"}
    for step in bf16.steps:
        header, _ = read_safetensors_header(step.path)
        codes = {name: info["dtype"] for name, info in header.items()}
        floats = {n: c for n, c in codes.items() if not n.startswith(("sample.", "logit_lens.")) and c not in ("I64", "I32")}
        assert floats and set(floats.values()) == {"BF16"}, codes
        for name in floats:
            a = step[name]
            assert a.dtype == np.float32 and step.dtype(name) == np.float32
            assert not (a.view(np.uint32) & 0xFFFF).any(), name  # bfloat16 values: the low half of each float32 is zero
        other, _ = read_safetensors_header(f32.steps[step.index].path)
        nbytes = [sum(t[n]["data_offsets"][1] - t[n]["data_offsets"][0] for n in floats) for t in (header, other)]
        assert nbytes[0] * 2 == nbytes[1] and {other[n]["dtype"] for n in floats} == {"F32"}  # half the bytes


def test_stored_tensors_are_the_models_bfloat16_activations(model, traces):
    bf16, f32, streamed = traces
    assert [t["id"] for t in bf16.tokens] == [t["id"] for t in f32.tokens] == [t["id"] for t in streamed.tokens]
    ids = torch.tensor([[t["id"] for t in bf16.tokens[: bf16.manifest["prompt_len"]]]])
    embed = model.get_input_embeddings()(ids)[0].detach().float().numpy()  # the model's own bfloat16 embedding
    assert np.array_equal(bf16.steps[0]["blocks.0.hook_resid_pre"], embed)
    for a, b, s in zip(bf16.steps, f32.steps, streamed.steps, strict=True):
        assert set(a.names) == set(b.names) == set(s.names)
        stored = _stored(a)
        for name in a.names:
            x, y = np.asarray(a[name]), np.asarray(b[name])
            if name in stored and not name.startswith(("sample.", "logit_lens.")) and x.dtype.kind == "f":
                # the float32 recording rounded to bfloat16 (two runs agree to rounding only: one ulp)
                np.testing.assert_allclose(x, _bf16(y), rtol=BF16_ULP, atol=1e-30, err_msg=name)
                np.testing.assert_array_equal(x, np.asarray(s[name]), err_msg=name)  # streamed: the same file contents
            elif x.dtype.kind == "f":  # computed by the reader from bfloat16 inputs: bfloat16's tolerance
                np.testing.assert_allclose(x, y, rtol=2e-2, atol=2e-2 * float(np.abs(y).max() or 1), err_msg=name)


def test_lens_file_stores_the_unembedding_like_the_activations(model, traces):
    bf16, _, _ = traces
    header, _ = read_safetensors_header(os.path.join(bf16.path, "lens.safetensors"))
    w_u = next(k for k in header if k.startswith("unembed.W_U"))  # W_U or W_U_T: the model's own layout
    assert header[w_u]["dtype"] == "BF16" and header["ln_final.w"]["dtype"] == "F32"
    arrays = read_lens_arrays(bf16)
    want = model.get_output_embeddings().weight.detach().float().numpy().T  # [d_model, vocab]
    assert arrays["unembed.W_U"].dtype == np.float32 and np.array_equal(arrays["unembed.W_U"], want)


def test_lens_and_attribution_work_on_a_bfloat16_trace(traces):
    bf16, f32, _ = traces
    lens = LogitLens.open(bf16.path, bf16.manifest["model"]["lens"])
    assert lens is not None
    for step in bf16.steps:
        want = np.asarray(step["logits"][-1])  # the model's logits, stored in bfloat16
        got = lens.logits(lens.rows(step))[-1]
        np.testing.assert_allclose(got, want, rtol=0.02, atol=0.02 * float(np.abs(want).max()))
        assert step["logit_lens.ids"].shape[0] == bf16.manifest["model"]["n_layers"]
    for index in range(len(bf16.steps)):
        a, b = attribute(bf16, index), attribute(f32, index)
        assert (a.target, a.other) == (b.target, b.other)
        scale = max(1.0, *(abs(t.value) for t in b.terms))
        assert abs(sum(t.value for t in a.terms) - a.actual) < 2e-2 * scale  # the parts sum to the difference (bfloat16 rounding)
        assert a.actual == b.actual  # the logits are bfloat16 in both traces
        for x, y in zip(a.terms, b.terms, strict=True):
            assert (x.kind, x.layer, x.head) == (y.kind, y.layer, y.head) and abs(x.value - y.value) < 2e-2 * scale


def test_a_trace_claiming_bfloat16_over_float32_arrays_is_refused(traces, tmp_path):
    _, f32, _ = traces
    bad = str(tmp_path / "bad")
    shutil.copytree(f32.path, bad)
    edit_manifest(bad, lambda m: m["dtype"].update(stored="bfloat16"))
    with pytest.raises(TraceError, match=r"is stored as F32, the manifest says bfloat16") as info:
        trace = load_trace(bad)
        trace.steps[0]["blocks.0.hook_resid_pre"]
    assert "\n" not in str(info.value)


def test_writer_stores_bfloat16_bits_whole_and_streamed(tmp_path):
    t = torch.randn(5, 7).to(torch.bfloat16)
    t[0, 0] = float("-inf")
    arrays = {"a": host_array(t), "b": host_array(t.T), "c": host_array(t)}  # any strides; c an alias of a
    _, _, aliases = write_step_file(str(tmp_path / "whole.safetensors"), dict(arrays))
    assert aliases == {"c": "a"}
    raw = (tmp_path / "whole.safetensors").read_bytes()
    header, start = read_safetensors_header(str(tmp_path / "whole.safetensors"))
    assert header["a"]["dtype"] == header["b"]["dtype"] == "BF16"
    b0, b1 = header["a"]["data_offsets"]
    assert raw[start + b0 : start + b1] == t.contiguous().view(torch.int16).numpy().tobytes()
    read = safetensors_arrays(raw, "whole")
    assert np.array_equal(read["a"], t.float().numpy()) and np.array_equal(read["b"], t.T.float().numpy())
    stream = StepStream(str(tmp_path), 4096)
    for name, a in arrays.items():
        stream.add(name, a)
    assert stream.finish(str(tmp_path / "streamed.safetensors"))[2] == aliases
    header, _ = read_safetensors_header(str(tmp_path / "streamed.safetensors"))
    again = load_safetensors_file(str(tmp_path / "streamed.safetensors"))
    assert {n: i["dtype"] for n, i in header.items()} == {"a": "BF16", "b": "BF16"}
    assert again.keys() == read.keys() and all(np.array_equal(again[n], read[n]) for n in read)


def test_the_app_opens_a_bfloat16_trace(traces):
    bf16, _, _ = traces
    trace = load_trace(bf16.path)
    app = StepscopeApp(trace=trace)

    async def script(app, pilot):
        for key in ("n", "n", "j"):  # next step twice, next layer
            await pilot.press(key)
            await pilot.pause()
        assert (app.step, app.layer) == (2, 1)
        for pane, pane_id in (("2", "heatmap"), ("3", "tensors"), ("4", "lens"), ("5", "kv")):
            await pilot.press(pane)
            await pilot.pause()
            assert app.main_screen.active_pane_id == pane_id
        await pilot.press("8")  # why: attribution from the bfloat16 unembedding
        await until(pilot, lambda: "logit difference" in screen(app))
        assert f"{attribute(trace, 2).actual:+.3f}" in screen(app)
        await pilot.press("5")
        await pilot.pause()
        assert "bfloat16" in screen(app) or "per position" in screen(app)

    run(app, script)


def test_diff_export_and_patching_read_a_bfloat16_trace(model, traces, tmp_path):
    bf16, f32, _ = traces
    d = compare(bf16, f32)
    assert d.first_token is None and d.first_step is None and len(d.steps) == len(bf16.steps)  # the same tokens
    worst = float(np.abs(tensor_diff(bf16, f32, 0, "blocks.1.hook_resid_post")["diff"]).max())
    assert worst <= BF16_ULP * float(np.abs(f32.steps[0]["blocks.1.hook_resid_post"]).max())
    cache = tl_cache(bf16, names=["blocks.0.hook_resid_pre"])
    assert cache["blocks.0.hook_resid_pre"].dtype == np.float32
    assert np.array_equal(cache["blocks.0.hook_resid_pre"][0][: bf16.manifest["prompt_len"]], bf16.steps[0]["blocks.0.hook_resid_pre"])
    # patching: the clean activations read from bfloat16 storage restore what float32 storage restores
    corrupt = PROMPT.replace("tiny", "ZZZZ")  # the same length, another first token
    results = []
    for store in ("bfloat16", "float32"):
        session = LiveSession(model, byte_tokenizer(), corrupt, GenerationSettings(max_new_tokens=1, chat=False),
                              out=str(tmp_path / store), store_dtype=store)
        session.run()
        clean = bf16 if store == "bfloat16" else f32
        results.append(sweep(model, clean, load_trace(str(tmp_path / store)), site="resid_pre").values)
    np.testing.assert_array_equal(results[0], results[1])


def test_the_stager_hands_bfloat16_bits_to_the_writer():
    st = HostStager(torch.device("cpu"), torch.bfloat16)
    f32, bf, ids = torch.randn(3, 4), torch.randn(2, 5).to(torch.bfloat16), torch.arange(4)
    t = torch.randn(4, 3).t()  # not contiguous
    for staged in (st.stage({"a": f32, "b": bf, "t": t, "ids": ids}), st.host({"a": f32, "b": bf, "t": t, "ids": ids})):
        arrays = staged.arrays()
        assert arrays["ids"].dtype == np.int64
        for name, want in (("a", f32), ("b", bf), ("t", t)):
            assert arrays[name].dtype == BF16 and arrays[name].shape == tuple(want.shape)
            np.testing.assert_array_equal(widen(arrays[name]), want.to(torch.bfloat16).float().numpy())


def test_trace_command_stores_bfloat16(model, tmp_path, capsys):
    d = tmp_path / "model"
    model.save_pretrained(d)
    byte_tokenizer().save_pretrained(d)
    args = ["trace", "--model", str(d), "--prompt", PROMPT, "--no-chat", "--max-new-tokens", "2", "--dtype", "bfloat16"]
    assert main([*args, "--out", str(tmp_path / "t"), "--store-dtype", "bfloat16"]) == 0
    trace = load_trace(str(tmp_path / "t"))
    assert trace.manifest["dtype"] == {"model": "bfloat16", "stored": "bfloat16"}
    assert read_safetensors_header(trace.steps[1].path)[0]["blocks.0.hook_resid_post"]["dtype"] == "BF16"
    assert main([*args, "--out", str(tmp_path / "u")]) == 0  # auto: float32 for a bfloat16 model
    assert load_trace(str(tmp_path / "u")).manifest["dtype"]["stored"] == "float32"


def test_record_api_stores_bfloat16(model, tmp_path):
    ids = torch.tensor([byte_tokenizer()(PROMPT)["input_ids"]])
    with stepscope.record(model, byte_tokenizer(), out=str(tmp_path / "t"), store_dtype="bfloat16") as rec:
        model.generate(ids, max_new_tokens=2, do_sample=False)
    assert rec.trace.manifest["dtype"]["stored"] == "bfloat16"
    assert read_safetensors_header(rec.trace.steps[0].path)[0]["logits"]["dtype"] == "BF16"
