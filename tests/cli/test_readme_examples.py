"""The README's Python examples run as written, on a tiny model instead of the hub's SmolLM2."""

from __future__ import annotations

import os
import re

import pytest

from stepscope.tracer.session import GenerationSettings, LiveSession
from tests.support.paths import README
from tests.support.tiny_models import byte_tokenizer, tiny_model

BLOCKS = dict(re.findall(r"<!-- readme-test: (\w+) -->\n```python\n(.*?)```", open(README, encoding="utf-8").read(), re.S))


@pytest.fixture(scope="module")
def paths(tmp_path_factory):
    """A tiny model directory (for MODEL) and a trace of it (for traces/paris)."""
    root = tmp_path_factory.mktemp("readme")
    model, tok = tiny_model("llama"), byte_tokenizer()
    model.save_pretrained(root / "model")
    tok.save_pretrained(root / "model")
    LiveSession(model, tok, "The capital of France is", GenerationSettings(max_new_tokens=4, chat=False), out=str(root / "paris")).run()
    return root


def _run(name: str, root, **replace) -> dict:
    code = BLOCKS[name]
    for old, new in replace.items():
        assert old in code, f"the README's {name} example no longer contains {old!r}"
        code = code.replace(old, new)
    scope: dict = {}
    exec(compile(code, f"README.md[{name}]", "exec"), scope)
    return scope


def test_the_examples_are_there():
    assert set(BLOCKS) >= {"record", "read", "tl"}


def test_record_example(paths, capsys):
    scope = _run("record", paths, **{'"HuggingFaceTB/SmolLM2-135M-Instruct"': repr(str(paths / "model")),
                                     '"traces/mine"': repr(str(paths / "mine"))})
    trace = scope["trace"]
    assert len(trace.steps) == 8 and os.path.isfile(paths / "mine" / "manifest.json")
    stages = trace.steps[0].sampling["stages"]
    assert [s["name"] for s in stages] == ["raw", "MinLengthLogitsProcessor", "TemperatureLogitsWarper", "TopKLogitsWarper"]
    assert stages[1]["kept"] == stages[0]["kept"] - 1 and stages[-1]["kept"] == 50
    assert "TopKLogitsWarper" in capsys.readouterr().out


def test_read_example(paths, capsys):
    scope = _run("read", paths, **{'"traces/paris"': repr(str(paths / "paris"))})
    assert len(scope["top"]) == 5 and len(scope["layers"]) == scope["trace"].model["n_layers"]
    assert scope["pattern"].shape[0] == scope["trace"].model["n_heads"]
    assert "steps" in capsys.readouterr().out


def test_tl_example(paths):
    scope = _run("tl", paths, **{'"traces/paris"': repr(str(paths / "paris"))})
    pos = scope["end"] - scope["start"]
    assert tuple(scope["resid"].shape)[:2] == (1, pos) and tuple(scope["pattern"].shape)[2:] == (pos, pos)
    assert scope["tokens"].shape == (1, pos)
