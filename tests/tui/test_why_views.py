"""The text of the attribution pane, the what-if panel and the diff view (tui/views), from tiny traces."""

from __future__ import annotations

import numpy as np
import pytest

from stepscope.tracer import load_trace
from stepscope.tracer.attribution import attribute
from stepscope.tracer.session import GenerationSettings, LiveSession
from stepscope.tracer.whatif import WhatIfSettings
from stepscope.tui.render.attribution import attribution_lines
from stepscope.tui.render.diff import diff_lines
from stepscope.tui.render.whatif import whatif_lines
from stepscope.tui.views.attribution import rivals, top_head
from stepscope.tui.views.whatif import adjusted, recorded_settings
from tests.support.tiny_models import byte_tokenizer, tiny_model


def _trace(path, prompt: str, **settings) -> object:
    session = LiveSession(tiny_model("llama"), byte_tokenizer(), prompt, GenerationSettings(max_new_tokens=2, **settings), out=str(path), name="tiny")
    while session.step() is not None:
        pass
    session.close()
    return load_trace(str(path))


@pytest.fixture(scope="module")
def traces(tmp_path_factory):
    root = tmp_path_factory.mktemp("why-views")
    return _trace(root / "a", "Paris is in France"), _trace(root / "b", "Paris is in Greece")


def test_attribution_lines(traces):
    a, _ = traces
    att = attribute(a, 1)
    lines = [t.plain for t in attribution_lines(a, 1, layer=1)]
    assert lines[0].startswith("why ") and f"{att.actual:+.3f}" in lines[0] and f"Σ {len(att.terms)} terms" in lines[0]
    assert lines[1].startswith("vs ") and lines[2] == "top (logits): " + att.words(6)
    narrow = [t.plain for t in attribution_lines(a, 1, layer=1, width=44)]  # wrapped between figures
    assert all(len(line) <= 44 for line in narrow[:6]), narrow
    assert f"logit difference {att.actual:+.3f}" in "\n".join(narrow)
    rows = [l for l in lines if l[:1] in ("▶", " ") and l[1:5].strip().isdigit()]
    assert [int(r[1:5]) for r in rows] == [0, 1] and rows[1].startswith("▶")
    assert f"{att.layers[0]['attn']:+7.2f}" in rows[0] and f"{att.layers[0]['mlp']:+7.2f}" in rows[0]
    heads = lines[lines.index(next(l for l in lines if l.strip().startswith("heads of layer 1"))) + 1 :]
    values = [float(h.split()[2]) for h in heads]
    assert len(values) == a.model["n_heads"] and values == sorted(values, key=lambda v: -abs(v))
    assert top_head(a, 1, 1) == max(att.heads(1), key=lambda t: abs(t.value)).head
    other = rivals(a, 1)[2]
    assert f"{attribute(a, 1, other=other).actual:+.3f}" in attribution_lines(a, 1, 0, other=other)[0].plain


def test_attribution_unavailable_is_one_line(tmp_path):
    t = _trace(tmp_path / "n", "Hi", logit_lens=False)
    lines = attribution_lines(t, 0, 0)
    assert len(lines) == 1 and "attribution unavailable" in lines[0].plain


def test_whatif_lines(traces):
    a, _ = traces
    greedy = recorded_settings(a)
    assert not greedy.do_sample
    lines = [t.plain for t in whatif_lines(a, 1, greedy)]
    chosen = a.steps[1].token["id"]
    assert lines[0] == "what if: greedy"
    would, happened = lines[1].split("happened:")
    assert lines[2] == "recorded: greedy"
    assert would.split()[-1] == happened.split()[-1] == f"{a.steps[1].sampling['chosen_prob']:.3f}"  # same token, same p
    hot = adjusted(adjusted(greedy, "temperature", 10), "top_k", 5)
    assert hot == WhatIfSettings(True, 2.0, 5, 1.0, 0.0, 0)
    lines = [t.plain for t in whatif_lines(a, 1, hot)]
    assert "top_k 5" in lines[3] and len([l for l in lines[8:] if float(l.split()[-1]) > 0]) == 5
    assert adjusted(greedy, "top_p", -40).top_p == 0.05 and adjusted(greedy, "min_p", 100).min_p == 0.98
    assert int(np.argmax(a.steps[1]["logits"][-1])) == chosen


def test_diff_lines(traces):
    a, b = traces
    same = [t.plain for t in diff_lines(a, load_trace(a.path), 0, 0)]
    assert "identical" in same[-1]
    lines = [t.plain for t in diff_lines(a, b, 1, 1)]
    assert lines[0] == "aligned position by position" and any(l.startswith("first differing token at position 12") for l in lines)
    assert any("blocks.1.hook_resid_post [1, 64]" in l for l in lines)
    x, y = a.steps[1]["blocks.1.hook_resid_post"][-1], b.steps[1]["blocks.1.hook_resid_post"][-1]
    rel = np.linalg.norm(y.astype(np.float64) - x) / np.linalg.norm(x.astype(np.float64))
    assert any(l.startswith("▶   1") and f"{rel:10.4f}" in l for l in lines)
