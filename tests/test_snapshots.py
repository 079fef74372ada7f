"""Snapshot tests (pytest-textual-snapshot) of the main screen, the panes, help and the too-small
notice, on the committed fixture trace. Update after a deliberate change with
`pytest tests/test_snapshots.py --snapshot-update` and review the SVGs in tests/__snapshots__/."""

from __future__ import annotations

import os

import pytest

from tracer import load_trace
from tui.app import StepscopeApp

FIXTURE = os.path.join(os.path.dirname(__file__), "fixtures", "tiny_trace")


@pytest.fixture
def app():
    return StepscopeApp(trace=load_trace(FIXTURE))


def test_main_screen_80x24(snap_compare, app):
    assert snap_compare(app, press=["n", "n", "j", "l"], terminal_size=(80, 24))


def test_main_screen_wide(snap_compare, app):
    assert snap_compare(app, press=["n"], terminal_size=(120, 34))


def test_candidates(snap_compare, app):
    assert snap_compare(app, press=["n", "n", "n", "1"], terminal_size=(100, 30))


def test_heatmap_prefill(snap_compare, app):
    assert snap_compare(app, press=["2", "l"], terminal_size=(100, 30))


def test_heatmap_decode(snap_compare, app):
    assert snap_compare(app, press=["end", "j", "2"], terminal_size=(100, 30))


def test_tensor_inspector(snap_compare, app):
    assert snap_compare(app, press=["n", "3"], terminal_size=(100, 30))


def test_heads_overview(snap_compare, app):
    assert snap_compare(app, press=["n", "6", "j", "l", "l"], terminal_size=(100, 30))


def test_help(snap_compare, app):
    assert snap_compare(app, press=["question_mark"], terminal_size=(100, 40))


def test_too_small(snap_compare, app):
    assert snap_compare(app, terminal_size=(60, 20))
