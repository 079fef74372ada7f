"""Breakpoints: parsing, evaluation on manifest entries (no array reads), scanning a trace."""

from __future__ import annotations

import os

import pytest

from tracer import load_trace
from tui.breakpoints import (
    AT_STEP,
    CHOSEN_PROB_BELOW,
    ENTROPY_ABOVE,
    NONFINITE,
    TOKEN_ID,
    TOKEN_TEXT,
    TOP1_PROB_BELOW,
    Breakpoint,
    BreakpointError,
    BreakpointSet,
)

FIXTURE = os.path.join(os.path.dirname(__file__), "fixtures", "tiny_trace")


def entry(index=1, text=" Paris", token_id=7042, chosen=0.42, top1=0.5, entropy=2.0, nonfinite=()):
    return {
        "index": index,
        "token": {"id": token_id, "text": text, "special": False, "position": 5 + index},
        "nonfinite": list(nonfinite),
        "sampling": {"chosen_prob": chosen, "top1_prob": top1, "entropy": entropy},
    }


@pytest.mark.parametrize(
    "spec, kind, value",
    [
        ("text=Paris", TOKEN_TEXT, "Paris"),
        ("token = Paris ", TOKEN_TEXT, "Paris"),
        ("text=' '", TOKEN_TEXT, " "),
        ("id=7042", TOKEN_ID, 7042),
        ("p<0.3", CHOSEN_PROB_BELOW, 0.3),
        ("top1 < 0.5", TOP1_PROB_BELOW, 0.5),
        ("entropy>2.5", ENTROPY_ABOVE, 2.5),
        ("nan", NONFINITE, None),
        ("NaN", NONFINITE, None),
        ("step=5", AT_STEP, 5),
    ],
)
def test_parse(spec, kind, value):
    bp = Breakpoint.parse(spec)
    assert (bp.kind, bp.value) == (kind, value)
    assert Breakpoint.parse(bp.spec) == bp  # the spec round-trips


@pytest.mark.parametrize(
    "spec", ["", "paris", "p>0.3", "entropy<1", "id=abc", "step=-1", "p<x", "foo=1", "text=", "p<inf"]
)
def test_parse_errors_are_clear(spec):
    with pytest.raises(BreakpointError) as info:
        Breakpoint.parse(spec)
    assert str(info.value)


def test_matches_each_kind():
    e = entry()
    assert Breakpoint(TOKEN_TEXT, "Paris").matches(e)  # surrounding whitespace ignored
    assert Breakpoint(TOKEN_TEXT, " Paris").matches(e)
    assert not Breakpoint(TOKEN_TEXT, "Lyon").matches(e)
    assert Breakpoint(TOKEN_ID, 7042).matches(e) and not Breakpoint(TOKEN_ID, 1).matches(e)
    assert Breakpoint(CHOSEN_PROB_BELOW, 0.5).matches(e) and not Breakpoint(CHOSEN_PROB_BELOW, 0.4).matches(e)
    assert Breakpoint(TOP1_PROB_BELOW, 0.6).matches(e) and not Breakpoint(TOP1_PROB_BELOW, 0.5).matches(e)
    assert Breakpoint(ENTROPY_ABOVE, 1.5).matches(e) and not Breakpoint(ENTROPY_ABOVE, 2.0).matches(e)
    assert not Breakpoint(NONFINITE).matches(e)
    assert Breakpoint(NONFINITE).matches(entry(nonfinite=["blocks.0.hook_resid_pre"]))
    assert Breakpoint(AT_STEP, 1).matches(e) and not Breakpoint(AT_STEP, 2).matches(e)
    assert not Breakpoint(AT_STEP, 1, enabled=False).matches(e)


def test_nan_probabilities_fire_threshold_breakpoints():
    e = entry(chosen=float("nan"), entropy=float("nan"))
    assert Breakpoint(CHOSEN_PROB_BELOW, 0.1).matches(e)
    assert Breakpoint(ENTROPY_ABOVE, 10.0).matches(e)


def test_describe_is_plain_text():
    assert Breakpoint.parse("p<0.3").describe() == "p(chosen) < 0.3"
    assert Breakpoint.parse("text=[red]x").describe() == "chosen token text is '[red]x'"
    assert Breakpoint.parse("nan").describe() == "any tensor has NaN/inf"


def test_set_add_remove_scan():
    bps = BreakpointSet()
    bps.add("step=3")
    bps.add("step=3")  # no duplicates
    bps.add(Breakpoint(TOKEN_ID, 9))
    assert len(bps) == 2
    entries = [entry(index=i, token_id=i + 5) for i in range(6)]
    assert bps.scan(entries, start=0) == (3, bps[0])
    assert bps.scan(entries, start=4) == (4, bps[1])  # id 9 at step 4
    assert bps.scan(entries, start=5) is None
    bps.remove(0)
    assert [bp.spec for bp in bps] == ["id=9"]
    bps.clear()
    assert not bps and bps.scan(entries) is None


def test_evaluates_real_trace_without_reading_arrays():
    trace = load_trace(FIXTURE)
    steps = trace.steps
    probs = [s.sampling["chosen_prob"] for s in steps]
    threshold = sorted(probs)[1] + 1e-9  # the two least likely choices fire
    bps = BreakpointSet([Breakpoint(CHOSEN_PROB_BELOW, threshold)])
    hits = [i for i in range(len(steps)) if bps.first_hit(steps[i])]
    assert len(hits) == 2
    assert all(s._header is None for s in steps._steps)  # no step file was opened
    first = bps.scan(trace.manifest["steps"])
    assert first is not None and first[0] == hits[0]


def test_nonfinite_from_a_written_trace(tmp_path):
    from tests.synthetic_trace import build_trace

    trace = load_trace(build_trace(tmp_path / "nan", n_decode=2, nan_in="blocks.1.hook_resid_post"))
    bp = Breakpoint.parse("nan")
    assert [bp.matches(step) for step in trace.steps] == [True, False, False]
    assert BreakpointSet([bp]).scan(trace.manifest["steps"]) == (0, bp)
