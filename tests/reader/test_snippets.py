"""TransformerLens / nnsight snippets of every intervention and patching cell: always valid Python;
run against the same model where the library is installed (skipped otherwise: neither is a dependency)."""

from __future__ import annotations

import contextlib
import io

import pytest

from stepscope.tracer import load_trace
from stepscope.tracer.snippets import LIBRARIES, intervention_snippet, model_id, patch_snippet, snippets_for_intervention
from tests.support.paths import FIXTURE

SPECS = [
    ("zero_head", (1, 2), False),
    ("mean_head", (0, 1), True),
    ("scale_head", (1, 3, 0.5), False),
    ("zero_neuron", (0, 7), False),
    ("clamp_neuron", (1, 7, 2.5), True),
    ("steer", (1, 0, 2, 0.75), False),
    ("patch", (0, "hook_resid_pre", 3, "elsewhere"), True),
]
SITES = ["resid_pre", "attn_out", "mlp_out", "head"]


@pytest.mark.parametrize("library", LIBRARIES)
@pytest.mark.parametrize("spec", SPECS, ids=[s[0] for s in SPECS])
@pytest.mark.parametrize("step", [0, 2])
def test_intervention_snippets_compile(library, spec, step):
    trace = load_trace(FIXTURE)
    ids = [t["id"] for t in trace.tokens[: trace.prompt_len + step]]
    code = intervention_snippet(library, trace.model, ids, spec, step, trace.prompt_len, source_ids=ids)
    compile(code, f"<{library} {spec[0]}>", "exec")
    assert model_id(trace.model) in code and str(ids) in code


@pytest.mark.parametrize("library", LIBRARIES)
@pytest.mark.parametrize("site", SITES)
def test_patch_snippets_compile(library, site):
    trace = load_trace(FIXTURE)
    code = patch_snippet(library, trace.model, [1, 2, 3], [1, 5, 3], site, layer=1, column=2, tokens=(7, 9))
    compile(code, f"<{library} {site}>", "exec")
    assert "[0, -1, 7] - logits[0, -1, 9]" in code


def test_a_patch_needs_the_other_traces_ids_and_unknown_names_are_refused():
    trace = load_trace(FIXTURE)
    with pytest.raises(ValueError, match="token ids"):
        snippets_for_intervention(trace, 0, SPECS[-1])
    with pytest.raises(ValueError, match="unknown intervention"):
        snippets_for_intervention(trace, 0, ("applied", (0,), False))
    with pytest.raises(ValueError, match="unknown library"):
        patch_snippet("pyvene", trace.model, [1], [2], "head", 0, 0, (1, 2))


def _run(code: str) -> str:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile(code, "<snippet>", "exec"), {})
    return out.getvalue()


@pytest.mark.parametrize("library", LIBRARIES)
def test_patch_snippets_reproduce_the_sweep(library, tmp_path, tiny_model_dir):
    pytest.importorskip(library)
    from stepscope import seam
    from tests.support.patching_pair import record_pair

    clean, corrupt = (load_trace(p) for p in record_pair(tiny_model_dir, str(tmp_path)))
    model = seam.patching_model(clean, device="cpu")
    for site in SITES:
        result = seam.patching_sweep(model, clean, corrupt, site=site)
        n = len(result.tokens)
        layer, column = 1, min(3, result.values.shape[1] - 1)
        code = patch_snippet(library, clean.model, [t["id"] for t in clean.tokens[:n]], [t["id"] for t in corrupt.tokens[:n]],
                             site, layer, column, (result.clean_token["id"], result.corrupt_token["id"]))
        printed = float(_run(code).split()[-1])
        want = result.corrupt_metric + result.cell(layer, column) * (result.clean_metric - result.corrupt_metric)
        assert abs(printed - want) < 1e-3, (site, printed, want)


@pytest.mark.parametrize("library", LIBRARIES)
def test_intervention_snippets_run(library, tmp_path, tiny_model_dir):
    pytest.importorskip(library)
    from tests.support.patching_pair import record_pair

    clean, corrupt = (load_trace(p) for p in record_pair(tiny_model_dir, str(tmp_path)))
    for spec in SPECS:
        if spec[0] == "patch":
            spec = ("patch", (0, "hook_resid_pre", 3, corrupt.path), True)
        code = snippets_for_intervention(clean, 1, spec, [t["id"] for t in corrupt.tokens])[library]
        assert int(_run(code).split()[0]) >= 0
