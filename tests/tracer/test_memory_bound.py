"""The memory a recording holds at once: a long prefill over the memory budget is streamed to disk
a block at a time and gives the same trace as the step held whole; the budget plans, reports,
trims and refuses for memory as it does for disk; a streamed step fails as cleanly as a whole one."""

from __future__ import annotations

import errno
import os

import numpy as np
import pytest
import torch

from stepscope.cli.main import main
from stepscope.tracer import load_trace
from stepscope.tracer import writer as writer_module
from stepscope.tracer.budget import ROWS_KEPT, BudgetError
from stepscope.tracer.names import forward_order
from stepscope.tracer.safetensors_read import read_safetensors_header
from stepscope.tracer.session import GenerationSettings, LiveSession
from stepscope.tracer.trace_format import TEMP_PREFIX, TraceWriteError
from stepscope.tracer.writer import StepStream, dedupe
from tests.support.tiny_models import byte_tokenizer, tiny_model

PROMPT = "a prompt long enough to pass the row limit of the budget policy, " * 3  # ~195 byte tokens
LAYERS = 8


@pytest.fixture(scope="module")
def model():
    return tiny_model("llama", num_hidden_layers=LAYERS), byte_tokenizer()


def _unique_bytes(tensors) -> int:
    seen: dict[int, int] = {}
    for t in tensors:
        key = t.untyped_storage().data_ptr()
        seen[key] = max(seen.get(key, 0), t.numel() * t.element_size())
    return sum(seen.values())


def _record(model, out, **options):
    """Run a session to the end; (trace, its plan, the most recorded-tensor bytes the recorder held
    at the end of any block, measured by forward hooks outside the recorder, and held_peak)."""
    m, tok = model
    session = LiveSession(m, tok, PROMPT, GenerationSettings(max_new_tokens=3, chat=False), out=out, **options)
    held = [0]

    def measure(module, args, output):
        held[0] = max(held[0], _unique_bytes(session.recorder.tensors.values()))

    hooks = [layer.register_forward_hook(measure) for layer in session.adapter.layers()]
    try:
        session.run()
    finally:
        for h in hooks:
            h.remove()
    return load_trace(out), session.plan, held[0], session.recorder.held_peak


def _assert_same_trace(a, b):
    assert a.manifest["model"].get("norm_inputs") == b.manifest["model"].get("norm_inputs")
    assert [t["id"] for t in a.tokens] == [t["id"] for t in b.tokens]
    for sa, sb in zip(a.steps, b.steps, strict=True):
        assert set(sa.names) == set(sb.names)
        for key in ("aliases", "omitted", "nonfinite", "positions"):
            assert sa.entry.get(key) == sb.entry.get(key), key
        for name in sa.names:  # every array read, so every checksum verified
            # (two runs of the same forward agree to rounding only: the BLAS may split a matmul
            # differently under load; on a quiet machine they are identical)
            np.testing.assert_allclose(sa[name], sb[name], rtol=1e-4, atol=1e-5, err_msg=name)


def test_a_streamed_prefill_holds_about_one_block_and_writes_the_same_trace(model, tmp_path):
    whole, whole_plan, whole_held, _ = _record(model, str(tmp_path / "whole"))
    assert not whole_plan.streamed
    prefill = whole.steps[0].nbytes
    assert whole_held > 0.8 * prefill  # the measure sees the whole step held at the last block

    budget = prefill // 3
    streamed, plan, held, peak = _record(model, str(tmp_path / "streamed"), memory_budget=budget)
    assert plan.streamed and plan.row_limit is None
    per_block = prefill / LAYERS
    assert held < 1.5 * per_block, (held, per_block)  # one block's tensors, not the step's
    assert peak <= plan.held_bytes <= budget  # the recorder's own count, within the plan's estimate
    assert peak < 2 * per_block
    _assert_same_trace(whole, streamed)
    assert not [f for f in os.listdir(tmp_path / "streamed") if f.startswith(TEMP_PREFIX)]


def test_the_memory_budget_trims_the_prefill_maps_then_refuses(model, tmp_path, capsys):
    m, tok = model
    streamed = LiveSession(m, tok, PROMPT, GenerationSettings(max_new_tokens=2, chat=False), out=str(tmp_path / "a"),
                           memory_budget=int(1e6) * 3)
    streamed.close()
    assert streamed.plan.streamed and streamed.plan.row_limit is None
    # less than one block with its maps whole: the maps keep their last rows, and it still streams
    trimmed, plan, held, _ = _record(model, str(tmp_path / "trimmed"), memory_budget=int(streamed.plan.held_bytes * 0.9))
    assert plan.streamed and plan.row_limit == ROWS_KEPT and plan.fits
    step = trimmed.steps[0]
    assert step.shape("blocks.0.attn.hook_pattern")[1] == ROWS_KEPT and step.omitted
    assert held <= plan.memory
    with pytest.raises(BudgetError, match="over the memory budget") as info:
        LiveSession(m, tok, PROMPT, GenerationSettings(max_new_tokens=2, chat=False), out=str(tmp_path / "never"), memory_budget=20_000)
    assert "--memory-budget" in str(info.value)
    assert not os.path.exists(tmp_path / "never")


def test_trace_prints_the_memory_line_and_checks_the_option(model, tmp_path, capsys):
    m, tok = model
    d = tmp_path / "model"
    m.save_pretrained(d)
    tok.save_pretrained(d)
    args = ["trace", "--model", str(d), "--prompt", PROMPT, "--no-chat", "--max-new-tokens", "2"]
    assert main([*args, "--out", str(tmp_path / "t"), "--memory-budget", "4M"]) == 0
    err = capsys.readouterr().err
    assert "memory budget 4.0 MiB: the prefill step is streamed to disk" in err, err
    assert main([*args, "--out", str(tmp_path / "u")]) == 0
    assert "memory budget 1.0 GiB: the recording holds about" in capsys.readouterr().err
    assert main([*args, "--out", str(tmp_path / "v"), "--memory-budget", "lots"]) == 2
    assert "--memory-budget" in capsys.readouterr().err


def test_a_full_disk_while_streaming_keeps_nothing_half_written(model, tmp_path, monkeypatch):
    m, tok = model
    out = tmp_path / "full"
    session = LiveSession(m, tok, PROMPT, GenerationSettings(max_new_tokens=2, chat=False), out=str(out), memory_budget=3_000_000)
    assert session.plan.streamed
    real, calls = os.pwrite, [0]

    def pwrite(fd, data, offset):
        calls[0] += 1
        if calls[0] > 5:  # a few blocks in
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(fd, data, offset)

    monkeypatch.setattr(writer_module.os, "pwrite", pwrite)
    with pytest.raises(TraceWriteError, match="disk full.*keeps its 0 complete steps"):
        session.step()
    monkeypatch.undo()
    session.close()
    assert not [f for f in os.listdir(out) if f.startswith(TEMP_PREFIX)]
    trace = load_trace(str(out))
    assert len(trace.steps) == 0 and trace.manifest["stop_reason"] == "error"


def test_a_stream_is_the_file_write_step_file_makes_even_when_its_header_outgrows_its_room(tmp_path):
    rng = np.random.default_rng(0)
    arrays = {f"blocks.{i}.hook_resid_pre": rng.standard_normal((7, 5)).astype(np.float32) for i in range(60)}
    arrays["blocks.3.hook_resid_post"] = arrays["blocks.4.hook_resid_pre"].copy()  # an alias
    arrays["zeros"] = np.zeros((3, 4), np.float32)
    arrays["also_zeros_other_shape"] = np.zeros((4, 3), np.float32)  # same bytes, another shape: stored
    arrays["ids"] = np.arange(6, dtype=np.int64).reshape(2, 3)
    arrays["logits"] = rng.standard_normal((9, 11)).astype(np.float32)
    stored, aliases, _ = dedupe(arrays)
    for reserve in (1 << 20, 64):  # room to spare; too little (the data moves behind the header)
        stream = StepStream(str(tmp_path), reserve)
        for name in forward_order(arrays):  # the order write_step_file stores a dict in
            a = arrays[name]
            if name == "logits":
                stream.add_rows(name, 9, (a[i : i + 4] for i in range(0, 9, 4)))
            else:
                stream.add(name, a.T.copy().T if name == "zeros" else a)  # any strides
        path = str(tmp_path / f"step_{reserve}.safetensors")
        size, checksum, got_aliases = stream.finish(path)
        assert got_aliases == aliases and size == os.path.getsize(path)
        header, start = read_safetensors_header(path)
        assert set(header) == {e[0] for e in stored}
        with open(path, "rb") as fh:
            data = fh.read()
        for name, info in header.items():
            lo, hi = info["data_offsets"]
            got = np.frombuffer(data[start + lo : start + hi], arrays[name].dtype).reshape(info["shape"])
            np.testing.assert_array_equal(got, arrays[name])
        assert not [f for f in os.listdir(tmp_path) if f.startswith(TEMP_PREFIX)]


def test_long_prompt_attention_in_row_blocks_is_the_same_computation(monkeypatch):
    """Blocks of query rows give the maps' last rows and z of the one-matrix computation."""
    from stepscope.tracer import attention

    torch.manual_seed(0)
    q, k, v = torch.randn(1, 6, 300, 16), torch.randn(1, 2, 300, 16), torch.randn(1, 2, 300, 16)

    class Rec:
        def __init__(self, rows):
            self.rows, self.got = rows, {}

        def map_rows(self, module, t):
            return self.rows

        def attention(self, module, query, key, value, scores, pattern, z):
            self.got = {"scores": scores, "pattern": pattern, "z": z}

    module = torch.nn.Module()
    module.is_causal = True
    whole, blocks = Rec(300), Rec(ROWS_KEPT)
    attention.RECORDERS[module] = whole
    z_whole, _ = attention.stepscope_attention(module, q, k, v, None)
    monkeypatch.setattr(attention, "BLOCK_BYTES", 6 * 300 * 4 * 64)  # 64 rows a block
    attention.RECORDERS[module] = blocks
    z_blocks, weights = attention.stepscope_attention(module, q, k, v, None)
    assert weights is None
    torch.testing.assert_close(z_blocks, z_whole, rtol=1e-5, atol=1e-6)
    for role in ("scores", "pattern"):
        assert blocks.got[role].shape == (1, 6, ROWS_KEPT, 300)
        torch.testing.assert_close(blocks.got[role], whole.got[role][:, :, -ROWS_KEPT:], rtol=1e-5, atol=1e-6)
