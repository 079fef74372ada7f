"""Breakpoints: parsing (both directions, `and`), evaluation on manifest entries (no array reads)
and on arrays through watch expressions, scanning a trace."""

from __future__ import annotations

import numpy as np
import pytest

from stepscope.tracer import load_trace
from stepscope.tui.breakpoints import Breakpoint, BreakpointError, BreakpointSet, Comparison, NonFinite, TokenText
from tests.support.paths import FIXTURE


def entry(index=1, text=" Paris", token_id=7042, chosen=0.42, top1=0.5, entropy=2.0, rank=0, nonfinite=()):
    return {
        "index": index,
        "token": {"id": token_id, "text": text, "special": False, "position": 5 + index},
        "nonfinite": list(nonfinite),
        "sampling": {"chosen_prob": chosen, "top1_prob": top1, "entropy": entropy, "chosen_rank": rank},
    }


@pytest.mark.parametrize(
    "spec, canonical",
    [
        ("text=Paris", "text=Paris"),
        ("token = Paris ", "text=Paris"),
        ("text=' '", "text=' '"),
        ("id=7042", "id=7042"),
        ("p<0.3", "p<0.3"),
        ("p > 0.9", "p>0.9"),
        ("top1 < 0.5", "top1<0.5"),
        ("top1>=0.8", "top1>=0.8"),
        ("entropy>2.5", "entropy>2.5"),
        ("entropy<0.5", "entropy<0.5"),
        ("nan", "nan"),
        ("NaN", "nan"),
        ("step=5", "step=5"),
        ("p>0.9 and entropy<0.5", "p>0.9 and entropy<0.5"),
        ("rank(' London') < 3", 'rank(" London")<3'),
        ("text=' and ' and p<0.5", "text=' and ' and p<0.5"),
    ],
)
def test_parse_round_trips(spec, canonical):
    bp = Breakpoint.parse(spec)
    assert bp.spec == canonical
    assert Breakpoint.parse(bp.spec) == bp


def test_two_sided_and_combined():
    bp = Breakpoint.parse("p>0.9 and entropy<0.5")
    assert [type(c) for c in bp.conditions] == [Comparison, Comparison]
    assert bp.matches(entry(chosen=0.95, entropy=0.2))
    assert not bp.matches(entry(chosen=0.95, entropy=0.7))  # one side fails
    assert not bp.matches(entry(chosen=0.5, entropy=0.2))
    assert bp.describe() == "p(chosen) > 0.9 and entropy < 0.5"
    assert bp.explain(entry(chosen=0.95, entropy=0.2)) == "p(chosen) > 0.9 (0.95) and entropy < 0.5 (0.2)"


@pytest.mark.parametrize(
    "spec", ["", "paris", "p>>0.3", "id=abc", "p<x", "foo=1", "text=", "p<", "p<0.3 and", "rank(1, 2)<3",
             "bogus(1)>2", "p<0.3 and and entropy>1"]
)
def test_parse_errors_are_one_line(spec):
    with pytest.raises(BreakpointError) as info:
        Breakpoint.parse(spec)
    assert str(info.value) and "\n" not in str(info.value)


def test_matches_each_kind():
    e = entry()
    assert Breakpoint.parse("text=Paris").matches(e)  # surrounding whitespace ignored
    assert Breakpoint.parse("text=' Paris'").matches(e)
    assert not Breakpoint.parse("text=Lyon").matches(e)
    assert Breakpoint.parse("id=7042").matches(e) and not Breakpoint.parse("id=1").matches(e)
    assert Breakpoint.parse("id!=1").matches(e)
    assert Breakpoint.parse("p<0.5").matches(e) and not Breakpoint.parse("p<0.4").matches(e)
    assert Breakpoint.parse("p>0.4").matches(e) and not Breakpoint.parse("p>0.5").matches(e)
    assert Breakpoint.parse("top1<0.6").matches(e) and not Breakpoint.parse("top1<0.5").matches(e)
    assert Breakpoint.parse("top1>=0.5").matches(e)
    assert Breakpoint.parse("entropy>1.5").matches(e) and not Breakpoint.parse("entropy>2.0").matches(e)
    assert Breakpoint.parse("entropy<2.5").matches(e)
    assert Breakpoint.parse("rank>1").matches(entry(rank=1)) and not Breakpoint.parse("rank>1").matches(e)
    assert not Breakpoint.parse("nan").matches(e)
    assert Breakpoint.parse("nan").matches(entry(nonfinite=["blocks.0.hook_resid_pre"]))
    assert Breakpoint.parse("step=1").matches(e) and not Breakpoint.parse("step=2").matches(e)
    assert not Breakpoint(Breakpoint.parse("step=1").conditions, enabled=False).matches(e)


def test_nan_probabilities_fire_ordering_breakpoints():
    e = entry(chosen=float("nan"), entropy=float("nan"))
    assert Breakpoint.parse("p<0.1").matches(e) and Breakpoint.parse("p>0.9").matches(e)
    assert Breakpoint.parse("entropy>10").matches(e)


def test_describe_is_plain_text():
    assert Breakpoint.parse("p<0.3").describe() == "p(chosen) < 0.3"
    assert Breakpoint.parse("text=[red]x").describe() == "chosen token text is '[red]x'"
    assert Breakpoint.parse("nan").describe() == "any tensor has NaN/inf"
    assert [type(c) for c in Breakpoint.parse("nan and text=x").conditions] == [NonFinite, TokenText]


def test_set_add_remove_scan():
    bps = BreakpointSet()
    bps.add("step=3")
    bps.add("step = 3")  # no duplicates
    bps.add("id=9")
    assert len(bps) == 2
    entries = [entry(index=i, token_id=i + 5) for i in range(6)]
    assert bps.scan(entries, start=0) == (3, bps[0])
    assert bps.scan(entries, start=4) == (4, bps[1])  # id 9 at step 4
    assert bps.scan(entries, start=5) is None
    bps.remove(0)
    assert [bp.spec for bp in bps] == ["id=9"]
    bps.clear()
    assert not bps and bps.scan(entries) is None


def test_manifest_conditions_read_no_array():
    trace = load_trace(FIXTURE)
    steps = trace.steps
    probs = [s.sampling["chosen_prob"] for s in steps]
    threshold = sorted(probs)[1] + 1e-9  # the two least likely choices fire
    bps = BreakpointSet([Breakpoint.parse(f"p<{threshold!r} and entropy>0")])
    assert not bps[0].reads_arrays
    hits = [i for i in range(len(steps)) if bps.first_hit(steps[i])]
    assert len(hits) == 2
    assert all(s is None or s._header is None for s in steps._steps)  # no step file was opened
    first = bps.scan(trace.manifest["steps"])
    assert first is not None and first[0] == hits[0]


def test_expression_conditions_on_arrays_two_sided():
    """rank("x") in a window, from the recorded logits: fires exactly where numpy says."""
    trace = load_trace(FIXTURE)
    x = 87  # "x"
    ranks = [1 + int((s["logits"][-1] > s["logits"][-1, x]).sum()) for s in trace.steps]
    lo, hi = sorted(ranks)[2], sorted(ranks)[-3]
    bp = Breakpoint.parse(f"rank('x')>={lo} and rank('x')<={hi}")
    assert bp.reads_arrays
    expected = [i for i, r in enumerate(ranks) if lo <= r <= hi]
    assert 0 < len(expected) < len(ranks)
    assert [i for i in range(len(ranks)) if bp.matches(trace.manifest["steps"][i], trace)] == expected
    assert [i for i in range(len(ranks)) if bp.matches(trace.steps[i], trace)] == expected
    assert BreakpointSet([bp]).scan(trace.manifest["steps"], trace=trace)[0] == expected[0]
    assert f"rank(\"x\") >= {lo} ({ranks[expected[0]]})" in bp.explain(trace.steps[expected[0]], trace)
    norm = np.linalg.norm(trace.steps[0]["blocks.1.hook_resid_post"][-1])
    assert Breakpoint.parse(f"norm(blocks.1.hook_resid_post[-1])>{norm * 0.99}").matches(trace.steps[0], trace)


def test_nonfinite_from_a_written_trace(tmp_path):
    from tests.support.synthetic_trace import build_trace

    trace = load_trace(build_trace(tmp_path / "nan", n_decode=2, nan_in="blocks.1.hook_resid_post"))
    bp = Breakpoint.parse("nan")
    assert [bp.matches(step) for step in trace.steps] == [True, False, False]
    assert BreakpointSet([bp]).scan(trace.manifest["steps"]) == (0, bp)
