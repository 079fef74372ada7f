"""Patching results on disk: written atomically, read back as untrusted input (one clear line when bad),
and the torch-free side of patching (format, views, snippets) imports no torch."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys

import numpy as np
import pytest

from stepscope.tracer.patch_format import (
    MAX_RESULT_BYTES,
    PatchingError,
    PatchingResult,
    correlation,
    load_result,
    result_name,
    result_path,
    saved_result,
)
from tests.support.paths import ROOT


def _result(site="resid_pre", values=None):
    values = np.array([[0.0, 0.5, float("nan")], [1.0, -0.25, 0.1]]) if values is None else values
    return PatchingResult(site=site, step=0, method="patch", tokens=["The", " cat", " sat"], corrupt_tokens=["The", " dog", " ran"],
                          values=values, clean_token={"id": 3, "text": " on"}, corrupt_token={"id": 4, "text": " in"},
                          clean_metric=2.5, corrupt_metric=-1.0, model="tiny", clean="c", corrupt="d", seconds=0.5,
                          extra={"forwards": 4})


def test_round_trip_keeps_every_field(tmp_path):
    r = _result()
    path = r.save(str(tmp_path / "clean" / "patching" / "x.json"))
    back = load_result(path)
    np.testing.assert_array_equal(np.isnan(back.values), np.isnan(r.values))
    np.testing.assert_allclose(np.nan_to_num(back.values), np.nan_to_num(r.values))
    assert (back.site, back.tokens, back.corrupt_tokens, back.clean_token, back.extra) == (r.site, r.tokens, r.corrupt_tokens, r.clean_token, r.extra)
    data = json.load(open(path))
    assert data["values"][0][2] is None and data["layers"] == 2 and data["positions"] == 3 and data["metric"] == "logit_diff"
    assert [f for f in os.listdir(os.path.dirname(path))] == ["x.json"]  # no temporary file left


def test_result_paths_are_named_beside_the_clean_trace(tmp_path):
    path = result_path(str(tmp_path / "fr"), "/somewhere/de trace/", "head", "attribution", 2)
    assert path == str(tmp_path / "fr" / "patching" / "de_trace-head-attribution-s2.json")
    assert result_name("../..", "resid_pre", "patch", 0) == "corrupt-resid_pre-patch-s0.json"
    assert saved_result(str(tmp_path / "fr"), "de", "head", "patch", 0) is None


def _write(path, obj):
    with open(path, "w") as f:
        f.write(obj if isinstance(obj, str) else json.dumps(obj))
    return str(path)


@pytest.mark.parametrize("change,message", [
    (lambda d: d.update(format="other"), "format"),
    (lambda d: d.update(version=9), "version"),
    (lambda d: d.update(site="embed"), "site"),
    (lambda d: d.update(method="guess"), "method"),
    (lambda d: d.update(layers=-1), "layers"),
    (lambda d: d.update(tokens=["a"]), "tokens"),
    (lambda d: d.update(values=[[1, 2, 3]]), "values"),
    (lambda d: d.update(values=[[1, 2], [1, 2]]), "values rows"),
    (lambda d: d.update(values=[[1, "x", 3], [1, 2, 3]]), "finite number"),
    (lambda d: d.update(clean_metric=float("inf")), "clean_metric"),
    (lambda d: d.update(clean_token={"id": "3", "text": "x"}), "clean_token"),
    (lambda d: d.update(extra={"k": [1]}), "extra"),
    (lambda d: d.pop("corrupt_tokens"), "corrupt_tokens"),
])
def test_bad_files_are_one_clear_line(tmp_path, change, message):
    data = _result().to_dict()
    data["values"] = [[0.0, 0.5, 0.1], [1.0, -0.25, 0.1]]
    change(data)
    path = _write(tmp_path / "r.json", json.dumps(data).replace("Infinity", "1e999"))
    with pytest.raises(PatchingError, match=message) as exc:
        load_result(path)
    assert "\n" not in str(exc.value) and str(exc.value).startswith(path)


@pytest.mark.parametrize("content", ["", "not json", "[1, 2]", '{"a": 1, "a": 2}', "[" * 5000 + "]" * 5000])
def test_garbage_is_refused(tmp_path, content):
    with pytest.raises(PatchingError, match="not a usable patching result"):
        load_result(_write(tmp_path / "r.json", content))


def test_links_fifos_and_huge_files_are_refused(tmp_path):
    real = _result().save(str(tmp_path / "real.json"))
    os.symlink(real, tmp_path / "link.json")
    with pytest.raises(PatchingError):
        load_result(str(tmp_path / "link.json"))
    os.mkfifo(tmp_path / "fifo.json")
    with pytest.raises(PatchingError, match="regular file"):
        load_result(str(tmp_path / "fifo.json"))
    with open(tmp_path / "big.json", "wb") as f:
        f.truncate(MAX_RESULT_BYTES + 1)
    with pytest.raises(PatchingError, match="limit"):
        load_result(str(tmp_path / "big.json"))
    with pytest.raises(FileNotFoundError):
        load_result(str(tmp_path / "missing.json"))


def test_correlation_skips_cells_not_computed():
    a = _result()
    b = _result(values=a.values * 2 + 1)
    assert math.isclose(correlation(a, b), 1.0)
    assert math.isnan(correlation(a, _result(values=np.zeros((2, 3)))))


def test_the_reading_side_of_patching_imports_no_torch():
    code = ("import sys, stepscope.tracer.patch_format, stepscope.tracer.snippets, stepscope.tui.views.patching, "
            "stepscope.tui.widgets.patching, stepscope.cli.patch; "
            "heavy = sorted(m for m in ('torch', 'transformers') if m in sys.modules); assert not heavy, heavy; print('ok')")
    res = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr
