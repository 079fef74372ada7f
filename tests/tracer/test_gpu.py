"""The CUDA path (run by bench/gpu_check.sh on a GPU machine; skipped without CUDA): a CUDA trace
equals a CPU trace of the same model and prompt within the dtype tolerance with the same greedy
tokens, and step tensors reach the host through one gather and reused pinned buffers. The CPU
half of the stager is tested everywhere."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from stepscope.tracer import load_trace
from stepscope.tracer.session import GenerationSettings, LiveSession
from stepscope.tracer.staging import SLOTS, HostStager
from stepscope.tracer.trace_format import BF16, widen
from tests.support.family_refs import randomize_norms
from tests.support.tiny_models import byte_tokenizer, tiny_model

cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
PROMPT = "Hi there"


def test_stager_on_the_cpu_gathers_one_flat_buffer():
    st = HostStager(torch.device("cpu"), torch.float32)
    f32, ids, f16 = torch.randn(3, 4), torch.arange(5), torch.randn(2, 2, dtype=torch.float16)
    t = torch.randn(4, 3).t()  # not contiguous
    staged = st.stage({"a": f32, "ids": ids, "h": f16, "t": t})
    arrays = staged.arrays()
    assert arrays["ids"].dtype == np.int64 and arrays["h"].dtype == np.float32
    for name, want in [("a", f32), ("h", f16.float()), ("t", t), ("ids", ids)]:
        np.testing.assert_array_equal(arrays[name], want.numpy())
    assert not np.shares_memory(arrays["a"], f32.numpy())  # never a view of a live model tensor
    assert arrays["a"].base is arrays["h"].base is arrays["t"].base  # one buffer for every float
    f32.add_(1)  # the model may reuse its memory after the step
    assert not np.array_equal(arrays["a"], f32.numpy())


def _trace(model, out, **settings):
    session = LiveSession(model, byte_tokenizer(), PROMPT, GenerationSettings(max_new_tokens=4, **settings), out=str(out))
    while session.step() is not None:
        pass
    session.close()
    return load_trace(str(out))


@pytest.mark.gpu
@cuda
def test_stager_on_cuda_copies_once_into_reused_pinned_buffers():
    st = HostStager(torch.device("cuda"), torch.float32)
    tensors = {
        "a": torch.randn(3, 4, device="cuda"),
        "t": torch.randn(4, 3, device="cuda").t(),  # not contiguous
        "b": torch.randn(5, device="cuda", dtype=torch.bfloat16),  # stored as float32
        "ids": torch.arange(4, device="cuda"),
    }
    pointers = []
    for _ in range(SLOTS + 1):
        arrays = st.stage(tensors).arrays()
        for name, t in tensors.items():
            want = t.float() if t.is_floating_point() else t
            np.testing.assert_array_equal(arrays[name], want.cpu().numpy())
        pointers.append(st._buffers[torch.float32, (st.steps - 1) % SLOTS].data_ptr())
    assert all(buf.is_pinned() for buf in st._buffers.values())
    assert pointers[0] == pointers[SLOTS]  # the slot is reused, not reallocated


@pytest.mark.gpu
@cuda
def test_stager_on_cuda_stores_bfloat16_bits():
    st = HostStager(torch.device("cuda"), torch.bfloat16)
    tensors = {"a": torch.randn(3, 4, device="cuda"), "b": torch.randn(5, device="cuda", dtype=torch.bfloat16),
               "t": torch.randn(4, 3, device="cuda").t()}
    arrays = st.stage(tensors).arrays()
    for name, t in tensors.items():
        assert arrays[name].dtype == BF16
        np.testing.assert_array_equal(widen(arrays[name]), t.to(torch.bfloat16).float().cpu().numpy())
    assert st._buffers[torch.bfloat16, 0].is_pinned()


@pytest.mark.gpu
@cuda
@pytest.mark.parametrize("key", ["llama", "gpt2", "gemma2", "mixtral"])
def test_cuda_trace_equals_cpu_trace(key, tmp_path):
    cpu = _trace(randomize_norms(tiny_model(key)), tmp_path / "cpu")
    gpu = _trace(randomize_norms(tiny_model(key)).to("cuda"), tmp_path / "cuda")
    assert [t["id"] for t in gpu.tokens] == [t["id"] for t in cpu.tokens]
    assert gpu.manifest["device"].startswith("cuda")
    for a, b in zip(cpu.steps, gpu.steps):
        assert set(a.names) == set(b.names)
        for name in a.names:
            x, y = np.asarray(a[name]), np.asarray(b[name])
            if name == "logit_lens.ids":  # eager on CUDA, lazy on the CPU: the top token per layer agrees
                assert np.array_equal(x[:, 0], y[:, 0]), name
                continue
            if not np.issubdtype(x.dtype, np.floating):
                assert np.array_equal(x, y), name
                continue
            fin = np.isfinite(x)
            assert np.array_equal(fin, np.isfinite(y)), name
            scale = max(float(np.abs(x[fin]).max()) if fin.any() else 0.0, 1.0)
            assert float(np.abs(x[fin] - y[fin]).max(initial=0.0)) / scale <= 1e-4, name  # docs/FIDELITY.md


@pytest.mark.gpu
@cuda
def test_smollm2_cuda_trace_equals_cpu_trace(tmp_path):
    from stepscope.tracer.loading import ModelLoadError, load_model

    try:
        cpu_model = load_model(None, device="cpu").model
    except ModelLoadError as exc:
        pytest.skip(str(exc))
    loaded = load_model(None, device="cuda")
    settings = GenerationSettings(max_new_tokens=8, chat=False, stop_at_eos=False)
    traces = []
    for model, name in ((cpu_model, "cpu"), (loaded.model, "cuda")):
        session = LiveSession(model, loaded.tokenizer, "The capital of France is", settings, out=str(tmp_path / name))
        session.run()
        traces.append(load_trace(str(tmp_path / name)))
    cpu, gpu = traces
    assert [t["id"] for t in gpu.tokens] == [t["id"] for t in cpu.tokens]
    for a, b in zip(cpu.steps, gpu.steps):
        for name in ("blocks.29.hook_resid_post", "blocks.10.attn.hook_pattern", "logits", "ln_final.hook_normalized"):
            x, y = np.asarray(a[name]), np.asarray(b[name])
            assert np.abs(x - y).max() / max(np.abs(x).max(), 1.0) <= 1e-3, name


def test_stager_reuses_its_cpu_buffers_and_a_background_writer_still_writes_every_step_exactly(tmp_path):
    """The CPU stager fills SLOTS reused buffers in turn (a step's arrays are overwritten SLOTS steps
    later), so a session with a background writer waits for a step before its slot comes round:
    its trace equals one written synchronously, array for array."""
    st = HostStager(torch.device("cpu"), torch.float32)
    first = st.stage({"a": torch.zeros(3)}).arrays()
    st.stage({"a": torch.ones(3)})
    st.stage({"a": torch.full((3,), 2.0)})
    assert first["a"].tolist() == [2.0, 2.0, 2.0]  # slot 0 again: the contract the session respects
    traces = []
    for background in (False, True):
        model = randomize_norms(tiny_model("llama"))
        session = LiveSession(model, byte_tokenizer(), PROMPT, GenerationSettings(max_new_tokens=6), out=str(tmp_path / f"bg{background}"),
                              background_writer=background)
        session.run()
        traces.append(load_trace(str(tmp_path / f"bg{background}")))
    sync, bg = traces
    assert len(sync.steps) == len(bg.steps) == 6
    for a, b in zip(sync.steps, bg.steps):
        assert a.names == b.names
        for name in a.names:
            np.testing.assert_array_equal(a[name], b[name], err_msg=name)
