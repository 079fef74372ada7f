"""Snapshot tests (pytest-textual-snapshot): every pane at 80×24 and 120×40, a decode step of the
heatmap, help and the too-small notice, on the committed fixture trace. Update after a deliberate
change with `pytest tests/tui/test_snapshots.py --snapshot-update` and review the SVGs in
tests/tui/__snapshots__/."""

from __future__ import annotations

import pytest

from stepscope.tracer import load_trace
from stepscope.tui.app import StepscopeApp
from tests.support.paths import FIXTURE

PANE_KEYS = {"candidates": "1", "attention": "2", "tensors": "3", "lens": "4", "kv": "5", "heads": "6", "model": "7",
             "whatif": "9"}


@pytest.fixture
def app():
    return StepscopeApp(trace=load_trace(FIXTURE))


@pytest.mark.parametrize("size", [(80, 24), (120, 40)], ids=["80x24", "120x40"])
@pytest.mark.parametrize("pane", list(PANE_KEYS))
def test_pane(snap_compare, app, pane, size):
    assert snap_compare(app, press=["n", "n", "j", "l", PANE_KEYS[pane]], terminal_size=size)


@pytest.mark.parametrize("size", [(80, 24), (120, 40)], ids=["80x24", "120x40"])
def test_why(snap_compare, app, size):
    async def run_before(pilot):
        await pilot.press("n", "n", "j", "l", "8")
        await pilot.pause()
        await pilot.app.workers.wait_for_complete()  # the unembedding, read in a worker
        await pilot.pause()

    assert snap_compare(app, run_before=run_before, terminal_size=size)


def test_heatmap_decode_all_steps(snap_compare, app):
    assert snap_compare(app, press=["end", "j", "2", "s"], terminal_size=(120, 40))


def test_help(snap_compare, app):
    assert snap_compare(app, press=["question_mark"], terminal_size=(100, 40))


def test_too_small(snap_compare, app):
    assert snap_compare(app, terminal_size=(60, 20))
