"""`stepscope patch CLEAN CORRUPT`: the JSON grid, the saved result reused, and one-line refusals (exit 2)."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

from stepscope import seam
from stepscope.cli.main import main
from stepscope.tracer import load_trace
from stepscope.tracer.patch_format import load_result, result_path
from stepscope.tracer.patching import sweep
from tests.support.patching_pair import record_pair


@pytest.fixture(scope="module")
def pair(tiny_model_dir, tmp_path_factory):
    return record_pair(tiny_model_dir, str(tmp_path_factory.mktemp("pair")))


def _run(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_json_grid_equals_the_sweep_and_is_saved_then_reused(pair, capsys, monkeypatch, tiny_model_dir):
    clean, corrupt = pair
    code, out, err = _run(capsys, "patch", clean, corrupt, "--json")
    assert code == 0, err
    got = json.loads(out)
    assert {"site", "step", "metric", "tokens", "layers", "positions", "values"} <= set(got)
    assert (got["site"], got["step"], got["layers"], got["positions"]) == ("resid_pre", 0, 2, 11)
    assert len(got["values"]) == 2 and all(len(r) == 11 for r in got["values"])
    saved = result_path(clean, corrupt, "resid_pre", "patch", 0)
    assert os.path.isfile(saved) and load_result(saved).values.shape == (2, 11)
    model = seam.patching_model(load_trace(clean), device="cpu")
    direct = sweep(model, load_trace(clean), load_trace(corrupt))
    np.testing.assert_allclose(np.array(got["values"]), direct.values, atol=1e-6)

    def no_model(*args, **kwargs):
        raise AssertionError("a saved result is reused, not recomputed")

    monkeypatch.setattr(seam, "patching_model", no_model)
    code, again, _ = _run(capsys, "patch", clean, corrupt, "--json")
    assert code == 0 and json.loads(again)["values"] == got["values"]


def test_text_grid_and_heads(pair, capsys):
    clean, corrupt = pair
    code, out, err = _run(capsys, "patch", clean, corrupt, "--site", "head", "--method", "attribution", "--text")
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0].startswith("attribution head") and "h3" in lines[1] and len(lines) == 2 + 2 + 1


def test_a_step_beyond_the_traces_is_one_line(pair, capsys):
    clean, corrupt = pair
    code, out, err = _run(capsys, "patch", clean, corrupt, "--step", "7")
    assert code == 2 and "beyond" in err and len(err.strip().splitlines()) == 1 and out == ""


def test_an_unknown_site_is_refused_by_the_parser(pair, capsys):
    clean, corrupt = pair
    with pytest.raises(SystemExit) as exc:
        main(["patch", clean, corrupt, "--site", "mlp_in"])
    assert exc.value.code == 2 and "invalid choice" in capsys.readouterr().err


def test_different_lengths_models_and_unrecorded_sites_are_one_line(pair, capsys, tmp_path, tiny_model_dir):
    from transformers import AutoTokenizer

    from stepscope.tracer.session import GenerationSettings, LiveSession
    from tests.support.tiny_models import tiny_model

    clean, corrupt = pair
    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    cases = {
        "long": (tiny_model("llama"), "A longer prompt here", None, "different token lengths"),
        "gpt2": (tiny_model("gpt2"), "The cow ate", None, "different models"),
        "narrow": (tiny_model("llama"), "The cow ate", ["blocks.*.hook_mlp_out", "logits"], "was not recorded"),
    }
    for name, (model, prompt, record, message) in cases.items():
        s = LiveSession(model, tok, prompt, GenerationSettings(max_new_tokens=1, chat=False), out=str(tmp_path / name),
                        record=record, name="tiny-llama" if name != "gpt2" else "tiny-gpt2")
        s.run()
        s.close()
        first, second = (str(tmp_path / name), corrupt) if name == "narrow" else (clean, str(tmp_path / name))
        code, out, err = _run(capsys, "patch", first, second)
        assert code == 2 and message in err and len(err.strip().splitlines()) == 1, (name, err)
        assert out == ""


def test_a_damaged_saved_result_is_one_line(pair, capsys):
    clean, corrupt = pair
    path = result_path(clean, corrupt, "mlp_out", "patch", 0)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        f.write('{"format": "stepscope-patching", "version": 1, "site": "mlp_out", "method": "patch", "values": 3}')
    code, out, err = _run(capsys, "patch", clean, corrupt, "--site", "mlp_out", "--json")
    assert code == 2 and "not a usable patching result" in err and len(err.strip().splitlines()) == 1
