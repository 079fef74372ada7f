"""Watch expressions: parser, checks and values over every step against direct numpy computation."""

from __future__ import annotations

import math
import os

import numpy as np
import pytest

from stepscope.tracer import load_trace
from stepscope.tracer.branch_layout import branch_path
from stepscope.tui.breakpoints import Breakpoint
from stepscope.tui.watch import ExprError, Watch, fresh_step, parse, parse_comparison, private_trace, unparse
from tests.support.paths import FIXTURE


def softmax(x):
    e = np.exp(x - x.max())
    return e / e.sum()


@pytest.mark.parametrize("text", [
    'p(" Paris")', "rank(\" London\")", "entropy", "norm(blocks.10.hook_resid_post[-1])",
    "pattern(5, 3)[-1, 0]", 'lens(12, " Paris")', "-p * 2 + 1 / (3 - entropy)", "logits[-1, 2:5]",
    "a[:, 1]", "x - (y - z)", "-(a + b)", 'p("a\\"b")',
])
def test_parse_unparse_round_trip(text):
    tree = parse(text)
    assert parse(unparse(tree)) == tree


@pytest.mark.parametrize("text, message", [
    ("", "empty"), ("p(", "column 3"), ("1 +", "column 4"), ("norm(x]", "expected ')'"),
    ("a $ b", "unexpected '$' at column 3"), ("x" * 600, "longer than"), ("(" * 100 + "1" + ")" * 100, "nested"),
])
def test_parse_errors_are_one_line(text, message):
    with pytest.raises(ExprError) as info:
        parse(text)
    assert message in str(info.value) and "\n" not in str(info.value)


def test_comparison():
    c = parse_comparison("p(' x') >= 0.5")
    assert c.op == ">=" and unparse(c) == 'p(" x") >= 0.5'
    assert parse_comparison("step=3").op == "=="
    with pytest.raises(ExprError):
        parse_comparison("p")


def test_values_over_all_steps_equal_numpy(fixture_trace):
    trace = fixture_trace
    n = len(trace.steps)
    x = trace.tokens[9]["id"]  # "x"
    expected = {
        "norm(blocks.1.hook_resid_post[-1])": [np.linalg.norm(trace.steps[i]["blocks.1.hook_resid_post"][-1].astype(np.float64)) for i in range(n)],
        "pattern(1, 3)[-1, 0]": [trace.steps[i]["blocks.1.attn.hook_pattern"][3, -1, 0] for i in range(n)],
        'rank("x")': [1 + (trace.steps[i]["logits"][-1] > trace.steps[i]["logits"][-1, x]).sum() for i in range(n)],
        'raw("x")': [softmax(trace.steps[i]["logits"][-1].astype(np.float64))[x] for i in range(n)],
        "entropy": [trace.steps[i].sampling["entropy"] for i in range(n)],
        "p": [trace.steps[i].sampling["chosen_prob"] for i in range(n)],
        "lens(-1)": [trace.steps[i]["logit_lens.probs"][-1, 0] for i in range(n)],
        "mean(blocks.0.attn.hook_z[-1, 2]) * 2 - 1": [
            2 * trace.steps[i]["blocks.0.attn.hook_z"][-1, 2].astype(np.float64).mean() - 1 for i in range(n)],
    }
    for text, values in expected.items():
        got = Watch.compile(text, trace).values(trace)
        np.testing.assert_allclose(got, np.asarray(values, dtype=np.float64), rtol=1e-6, atol=1e-9, err_msg=text)


def test_p_of_a_token_is_the_final_sampling_probability(fixture_trace):
    trace = fixture_trace
    for i, step in enumerate(trace.steps):
        chosen = step.token["id"]
        w = Watch.compile(f"p({chosen})", trace)
        assert w.at(trace, i) == pytest.approx(step.sampling["chosen_prob"], rel=1e-6)
        ids = step["sample.candidate_ids"]
        assert w.at(trace, i) == pytest.approx(float(step["sample.candidate_probs"][list(ids).index(chosen)]))
    removed = next(t for t in range(300) if t not in step["sample.candidate_ids"])  # top-k/top-p removed it
    assert Watch.compile(f"p({removed})", trace).at(trace, len(trace.steps) - 1) == 0.0


def test_lens_of_a_token(fixture_trace):
    trace = fixture_trace
    step = trace.steps[2]
    tid, prob = int(step["logit_lens.ids"][1, 3]), float(step["logit_lens.probs"][1, 3])
    w = Watch.compile(f"lens(1, {tid})", trace)
    assert w.at(trace, 2) == pytest.approx(prob)
    absent = next(t for t in range(300) if t not in step["logit_lens.ids"][0])
    w0 = Watch.compile(f"lens(0, {absent})", trace)  # outside the top 10: exact from the stored W_U
    assert 0 < w0.at(trace, 2) < float(step["logit_lens.probs"][0, -1]) and w0.error_at(trace, 2) is None


@pytest.mark.parametrize("text, message", [
    ("foo(1)", "unknown function foo()"),
    ("blocks.9.hook_resid_post", "not recorded"),
    ("entropyy", "not recorded in this trace; variables:"),
    ("logits", "array of shape [1, 259]"),
    ('p("Hello")', "is 5 tokens"),
    ('" x" + 1', "can only be a token argument"),
    ("pattern(1)", "takes 2 arguments"),
    ('norm("x")', "is a number, not a text"),
    ('__import__("os")', "unknown function"),
])
def test_bad_expressions_get_one_line(fixture_trace, text, message):
    with pytest.raises(ExprError) as info:
        Watch.compile(text, fixture_trace)
    assert message in str(info.value) and "\n" not in str(info.value)


def test_step_errors_are_nan_with_a_reason(fixture_trace):
    trace = fixture_trace
    w = Watch.compile("blocks.0.hook_resid_post[3, 0]", trace)  # only the prefill has 4+ rows
    assert not math.isnan(w.at(trace, 0))
    assert math.isnan(w.at(trace, 1)) and "outside axis 0" in w.error_at(trace, 1)


def test_values_are_cached(fixture_trace, monkeypatch):
    trace = fixture_trace
    w = Watch.compile("norm(logits)", trace)
    first = w.values(trace)
    calls = []
    monkeypatch.setattr(w, "compute", lambda *a: calls.append(a) or (0.0, None))
    np.testing.assert_array_equal(w.values(trace), first)
    assert calls == [] and w.missing(trace) == []


def test_manifest_only_expressions_need_no_array():
    assert not Watch(parse("p * 2 + entropy + rank + top1 + rank() + p()"), "").reads_arrays
    assert Watch(parse('p(" x")'), "").reads_arrays and Watch(parse("norm(logits)"), "").reads_arrays


def test_a_damaged_step_file_is_nan_with_a_reason(tmp_path):
    import shutil

    from stepscope.tracer import load_trace
    from stepscope.tui.breakpoints import Breakpoint
    from tests.support.synthetic_trace import build_trace

    path = build_trace(tmp_path / "t", n_decode=3)
    trace = load_trace(path)
    w = Watch.compile("norm(logits[-1])", trace)
    victim = trace.steps[2].path
    with open(victim, "r+b") as fh:  # a header length past the end of the file
        fh.write((10**9).to_bytes(8, "little"))
    assert not math.isnan(w.at(trace, 1))
    assert math.isnan(w.at(trace, 2)) and "corrupted" in w.error_at(trace, 2)
    bp = Breakpoint.parse("norm(logits[-1])>0")
    assert bp.matches(trace.manifest["steps"][1], trace) and not bp.matches(trace.manifest["steps"][2], trace)
    assert not bp.matches(trace.manifest["steps"][1])  # no trace: an expression on arrays cannot fire
    shutil.rmtree(path)


class _Lens:
    """A stand-in for a reader's lazy logit lens: final RMSNorm (weight 1) and an unembedding."""

    def __init__(self, w_u):
        self.w_u = w_u

    def has_rows(self, step):
        return True

    def rows(self, step):
        return np.stack([step[f"blocks.{i}.hook_resid_post"][-1] for i in range(2)])  # [n_layers, d_model]

    def logits(self, rows):
        x = rows / np.sqrt((rows * rows).mean(-1, keepdims=True) + 1e-5)
        return x @ self.w_u


def test_lens_of_any_token_with_a_readers_lazy_lens(tmp_path):
    from stepscope.tracer import load_trace

    trace = load_trace(FIXTURE)
    w_u = np.random.default_rng(0).normal(size=(64, 259)).astype(np.float32)
    trace.lens = _Lens(w_u)
    step = trace.steps[3]
    x = step["blocks.1.hook_resid_post"][-1].astype(np.float64)
    expected = softmax((x / np.sqrt((x * x).mean() + 1e-5)) @ w_u)[200]
    assert Watch.compile("lens(1, 200)", trace).at(trace, 3) == pytest.approx(expected, rel=1e-5)
    assert Watch.compile("lens(1)", trace).at(trace, 3) == float(step["logit_lens.probs"][1, 0])  # top: as stored


def test_private_trace_grows_instead_of_reloading(fixture_trace):
    from stepscope.tracer.reader import Trace
    from stepscope.tui.watch import fresh_step, private_trace

    ui = Trace(fixture_trace.path, {**fixture_trace.manifest, "steps": list(fixture_trace.manifest["steps"][:3]),
                                    "tokens": list(fixture_trace.tokens[:fixture_trace.prompt_len + 3])})
    first = private_trace(ui)
    assert first is not ui and len(first.steps) == 3
    ui.add_steps(fixture_trace.manifest["steps"][3:5], fixture_trace.tokens[fixture_trace.prompt_len + 3:][:2])
    again = private_trace(ui, first)
    assert again is first and len(again.steps) == 5 and len(again.tokens) == len(ui.tokens)
    other = Trace(ui.path, {**ui.manifest, "steps": [dict(e) for e in fixture_trace.manifest["steps"]]})
    assert private_trace(other, first) is not first  # not the same steps: a new copy
    step = fresh_step(again, again.manifest["steps"][4])
    assert step is not ui.steps[4] and np.array_equal(step["logits"], ui.steps[4]["logits"])


def test_watches_and_breakpoints_read_a_branchs_shared_steps(branched):
    """A branch's steps before its branch point live in its parent's directory: a watch or a
    breakpoint evaluated on a fresh step (what the workers build) reads them there."""
    root, _ = branched
    trace = load_trace(branch_path(root, "b1"))  # forced at step 1: step 0 is the root's
    shared = trace.manifest["steps"][0]
    want = float(np.linalg.norm(trace.steps[0]["blocks.0.hook_resid_post"][-1]))
    private = private_trace(trace)
    step = fresh_step(private, shared)
    assert os.path.dirname(step.path) == root
    value, error = Watch.compile("norm(blocks.0.hook_resid_post[-1])", trace).compute(private, 0, step=step)
    assert error is None and value == pytest.approx(want)
    assert Watch.compile("norm(blocks.0.hook_resid_post[-1])", private).at(private, 0) == pytest.approx(want)
    bp = Breakpoint.parse(f"norm(blocks.0.hook_resid_post[-1])>{want * 0.99}")
    assert bp.matches(shared, trace)  # an entry: the breakpoint reads a fresh step of it
