"""The README's Python examples run as written: recording on the embedded SmolLM2 offline, reading on a
tiny model's trace."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest

from stepscope.tracer import load_trace
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


def test_record_example_runs_as_written_offline_in_an_empty_folder(smollm2_cache, tmp_path):
    """The example as written, in a fresh interpreter, in an empty folder (traces/ does not exist),
    with the hub offline: `stepscope.load_model("smollm2")` is the embedded model."""
    folder = tmp_path / "empty"
    folder.mkdir()
    script = tmp_path / "example.py"
    script.write_text(BLOCKS["record"], encoding="utf-8")
    env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", CUDA_VISIBLE_DEVICES="")
    r = subprocess.run([sys.executable, str(script)], cwd=folder, capture_output=True, text=True, timeout=600, env=env)
    assert r.returncode == 0, r.stderr[-2000:]
    expected = re.search(r"^# (\[\('raw'.*)$", BLOCKS["record"], re.M).group(1)
    assert r.stdout.strip().splitlines()[-1] == expected  # the output the README shows
    trace = load_trace(str(folder / "traces" / "mine"))
    assert len(trace.steps) == 8 and trace.model["vocab_size"] == 49152


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
