"""Pilot tests of the attribution pane, the what-if panel and the diff view, each mounted alone."""

from __future__ import annotations

import pytest

from stepscope.tracer import load_trace
from stepscope.tracer.attribution import attribute
from stepscope.tracer.session import GenerationSettings, LiveSession
from stepscope.tracer.whatif import WhatIfSettings
from stepscope.tui.state import Cursor
from stepscope.tui.widgets.attribution import AttributionPane
from stepscope.tui.widgets.diff import DiffPane
from stepscope.tui.widgets.whatif import WhatIfPane
from tests.support import pane_harness as harness
from tests.support.tiny_models import byte_tokenizer, tiny_model


def drive(pane, script, size=(100, 40)):
    return harness.drive(pane, script, size)


def screen(app) -> str:
    return "\n".join(strip.text.rstrip() for strip in app.screen._compositor.render_strips())


def _trace(path, prompt):
    s = LiveSession(tiny_model("llama"), byte_tokenizer(), prompt, GenerationSettings(max_new_tokens=2), out=str(path), name="tiny")
    while s.step() is not None:
        pass
    s.close()
    return load_trace(str(path))


@pytest.fixture(scope="module")
def traces(tmp_path_factory):
    root = tmp_path_factory.mktemp("why-panes")
    return _trace(root / "a", "Paris is in France"), _trace(root / "b", "Paris is in Greece")


def test_attribution_pane_follows_the_cursor_and_moves_to_the_top_head(traces):
    a, _ = traces
    pane = AttributionPane(a)

    async def script(app, pilot):
        pane.cursor = Cursor(step=1, layer=1)
        await pilot.pause()
        text = screen(app)
        att = attribute(a, 1)
        assert f"{att.actual:+.3f}" in text and "heads of layer 1" in text
        pane.focus()
        await pilot.press("o")  # the next rival: another difference
        await pilot.pause()
        rival = attribute(a, 1, other=pane.other())
        assert pane.other() != att.other and f"{rival.actual:+.3f}" in screen(app)
        await pilot.press("h")
        await pilot.pause()
        assert app.moves[-1] == {"head": max(rival.heads(1), key=lambda t: abs(t.value)).head}

    drive(pane, script)


def test_whatif_pane_keys_change_the_replay(traces):
    a, _ = traces
    pane = WhatIfPane(a)

    async def script(app, pilot):
        pane.cursor = Cursor(step=1)
        await pilot.pause()
        assert "what if: greedy" in screen(app)
        pane.focus()
        for key in ("T", "T", "K", "K", "K"):
            await pilot.press(key)
        await pilot.pause()
        assert pane.settings == WhatIfSettings(True, 1.2, 3, 1.0, 0.0, 0)
        assert "what if: sample T 1.2 · top-k 3" in screen(app) and "top_k 3" in screen(app)
        await pilot.press("r")
        await pilot.pause()
        assert "what if: greedy" in screen(app)

    drive(pane, script)


def test_diff_pane(traces):
    a, b = traces
    pane = DiffPane(a, other=b)

    async def script(app, pilot):
        pane.cursor = Cursor(step=1, layer=0)
        await pilot.pause()
        text = screen(app)
        assert "aligned position by position" in text and "blocks.0.hook_resid_post" in text

    drive(pane, script)
