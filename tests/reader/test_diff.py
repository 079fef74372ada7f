"""`stepscope diff` and tracer/diff.py: identical against itself, one changed value found exactly,
two prompts compared (equal lengths position by position, unequal aligned at the prompt's end)."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
from safetensors.numpy import load_file

from stepscope.cli.main import main
from stepscope.tracer import load_trace
from stepscope.tracer.diff import compare, summary, tensor_diff
from stepscope.tracer.session import GenerationSettings, LiveSession
from stepscope.tracer.trace_format import TraceError
from stepscope.tracer.writer import write_step_file
from tests.support.tiny_models import byte_tokenizer, tiny_model
from tests.support.trace_edit import edit_entries


def _trace(path, prompt: str, new_tokens: int = 3, family: str = "llama") -> str:
    session = LiveSession(tiny_model(family), byte_tokenizer(), prompt, GenerationSettings(max_new_tokens=new_tokens), out=str(path), name="tiny")
    while session.step() is not None:
        pass
    session.close()
    return str(path)


@pytest.fixture(scope="module")
def traces(tmp_path_factory):
    root = tmp_path_factory.mktemp("diff")
    return {k: _trace(root / k, p) for k, p in {"france": "Paris is in France", "greece": "Paris is in Greece", "short": "In France"}.items()}


def _change_one_value(src: str, dst: str, step: int, name: str, index: tuple) -> float:
    """Copy a trace and add 1 to one float32 element of one stored tensor, rewriting that step
    file with the trace writer (so its checksums stay valid)."""
    shutil.copytree(src, dst)
    entries = load_trace(dst).manifest["steps"]
    assert name not in (entries[step].get("aliases") or {})
    path = f"{dst}/{entries[step]['file']}"
    arrays = load_file(path)
    assert arrays[name].dtype == np.float32
    arrays[name][index] += np.float32(1.0)
    value = arrays[name][index]
    stored_aliases = entries[step].get("aliases") or {}
    arrays.update({alias: arrays[target] for alias, target in stored_aliases.items()})
    size, checksum, aliases = write_step_file(path, arrays)
    assert aliases == stored_aliases
    edit_entries(dst, lambda es: es[step].update(bytes=size, checksum=checksum))
    return float(value)


def test_a_trace_against_itself_is_identical(traces, capsys):
    a = load_trace(traces["france"])
    d = compare(a, load_trace(traces["france"]))
    assert d.identical and d.first_difference is None and d.first_token is None and d.first_step is None
    assert all(rel == 0 and cos == pytest.approx(1.0) for s in d.steps for rel, cos in s.layers)
    assert main(["diff", traces["france"], traces["france"]]) == 0
    assert "identical" in capsys.readouterr().out


@pytest.mark.parametrize("step, name, index", [(2, "blocks.1.mlp.hook_post", (0, 17)), (0, "blocks.0.attn.hook_pattern", (3, 5, 2))])
def test_one_changed_value_is_found_exactly(traces, tmp_path, capsys, step, name, index):
    changed = _change_one_value(traces["france"], tmp_path / "copy", step, name, index)
    a, b = load_trace(traces["france"]), load_trace(str(tmp_path / "copy"))
    d = compare(a, b)
    assert not d.identical and d.first_token is None  # the tokens are the recorded ones
    f = d.first_difference
    assert (f.step, f.name, f.index) == (step, name, index)
    row = index[1] if name.endswith("hook_pattern") else index[0]
    assert f.position == a.steps[step].positions[0] + row
    assert f.b == pytest.approx(changed) and f.a == pytest.approx(changed - 1.0)
    assert [s.differs for s in d.steps] == [[name] if s.index == step else [] for s in d.steps]  # exactly that tensor
    side = tensor_diff(a, b, step, name)
    assert np.count_nonzero(side["diff"]) == 1 and side["diff"][index] == pytest.approx(1.0)
    assert main(["diff", traces["france"], str(tmp_path / "copy"), "--tensor", name, "--step", str(step)]) == 1
    out = capsys.readouterr().out
    assert f"first differing tensor: step {step} {name}{list(index)}" in out
    assert "1 of " in out and f"  {list(index)}" in out  # the drill-down lists exactly that element


def test_equal_length_prompts_position_by_position(traces):
    a, b = load_trace(traces["france"]), load_trace(traces["greece"])
    assert a.prompt_len == b.prompt_len
    d = compare(a, b)
    assert d.aligned == "position by position" and d.shift == 0
    assert d.first_token == next(i for i, (x, y) in enumerate(zip(a.tokens, b.tokens)) if x["id"] != y["id"])
    assert d.first_difference.step == 0
    # the divergence is computed from the two residuals, independently: relative norm and cosine
    x = a.steps[0]["blocks.1.hook_resid_post"][-1].astype(np.float64)
    y = b.steps[0]["blocks.1.hook_resid_post"][-1].astype(np.float64)
    rel, cos = d.steps[0].layers[1]
    assert rel == pytest.approx(np.linalg.norm(y - x) / np.linalg.norm(x))
    assert cos == pytest.approx(x @ y / np.linalg.norm(x) / np.linalg.norm(y))
    assert rel > 0 and "residual divergence" in summary(d)


def test_unequal_prompts_align_at_the_end(traces):
    a, b = load_trace(traces["short"]), load_trace(traces["france"])
    d = compare(a, b)
    assert d.shift == b.prompt_len - a.prompt_len and "at the end of the prompt" in d.aligned
    assert f"A: {a.prompt_len} tokens, B: {b.prompt_len} tokens" in summary(d)
    side = tensor_diff(a, b, 0, "blocks.0.hook_resid_pre")
    assert side["cropped"] and side["a"].shape[0] == a.prompt_len  # B's last prompt rows pair with A's
    np.testing.assert_array_equal(side["b"], b.steps[0]["blocks.0.hook_resid_pre"][-a.prompt_len :])
    # "France" ends both prompts: the same last tokens, the same embeddings there
    assert [t["id"] for t in a.tokens[: a.prompt_len]][-6:] == [t["id"] for t in b.tokens[: b.prompt_len]][-6:]
    np.testing.assert_array_equal(a.steps[0]["hook_embed"][-6:], b.steps[0]["hook_embed"][-6:])


def test_bad_input_exits_2(traces, tmp_path, capsys):
    assert main(["diff", traces["france"], str(tmp_path / "nowhere")]) == 2
    other = _trace(tmp_path / "gpt2", "Hi", new_tokens=1, family="gpt2")  # another model shape
    assert main(["diff", traces["france"], other]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 2 and "not the same model" in err
    assert main(["diff", traces["france"], traces["france"], "--tensor", "nope"]) == 2
    assert "has no nope" in capsys.readouterr().err
    with pytest.raises(TraceError, match="no step 9"):
        tensor_diff(load_trace(traces["france"]), load_trace(traces["france"]), 9, "logits")


@pytest.mark.parametrize("top", ["-1", "-100"])
def test_a_negative_top_exits_2_with_one_line(traces, capsys, top):
    assert main(["diff", traces["france"], traces["greece"], "--top", top]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"--top: expected 0 or more layers, got {top}" in err
    with pytest.raises(ValueError, match="0 or more"):
        summary(compare(load_trace(traces["france"]), load_trace(traces["greece"])), int(top))


def test_top_zero_lists_no_layers(traces, capsys):
    assert main(["diff", traces["france"], traces["greece"], "--top", "0", "--text"]) == 1
    assert "residual divergence" not in capsys.readouterr().out
