"""`stepscope.seam`: the calls through which the CLI, the Python API and the debugger reach the recording side."""

from __future__ import annotations

import numpy as np
import pytest

from stepscope import seam
from stepscope.tracer.branch import BranchSet
from stepscope.tracer.session import GenerationSettings, LiveSession
from tests.support.tiny_models import byte_tokenizer, tiny_model


@pytest.fixture(scope="module")
def session(tmp_path_factory):
    model, tok = tiny_model("llama"), byte_tokenizer()
    s = LiveSession(model, tok, "Hello there", GenerationSettings(max_new_tokens=3, chat=False),
                    out=str(tmp_path_factory.mktemp("seam") / "t"))
    branches = seam.make_branch_set(s)
    s.step()
    s.step()
    yield s, branches
    s.close()


def test_make_branch_set_and_the_editable_names(session):
    s, branches = session
    assert isinstance(branches, BranchSet) and branches.session is s
    assert "hook_resid_post" in seam.editable_names() and "attn.hook_z" in seam.editable_names()
    assert seam.make_branch_set(object()) is None  # branching is optional: no set, no error


def test_build_intervention_of_each_kind(session):
    s, _ = session
    zero = seam.build_intervention(("zero_head", (1, 2), True), 1, s)
    assert (zero.kind, zero.layer, zero.head, zero.from_step, zero.only) == ("zero_head", 1, 2, 1, True)
    clamp = seam.build_intervention(("clamp_neuron", (0, 5, 2.0), False), 1, s)
    assert (clamp.kind, clamp.index, clamp.value) == ("clamp_neuron", 5, 2.0)
    mean = seam.build_intervention(("mean_head", (0, 1), False), 1, s)
    assert mean.kind == "mean_head" and mean.vector is not None
    steer = seam.build_intervention(("steer", (1, 0, 2, 0.5), False), 1, s)
    resid = s.trace.steps[0]["blocks.1.hook_resid_post"]  # [T, d_model]
    np.testing.assert_allclose(steer.vector, 0.5 * (resid[0] - resid[2]), rtol=1e-6, atol=1e-6)
    assert steer.tensor == "blocks.1.hook_resid_post"
    with pytest.raises(ValueError, match="unknown intervention"):
        seam.build_intervention(("applied", (), False), 1, s)


def test_generation_settings_and_model_checks():
    settings = seam.generation_settings(max_new_tokens=0)
    with pytest.raises(ValueError, match="max-new-tokens"):
        settings.validate()
    with pytest.raises(Exception, match="no such GGUF file"):
        seam.check_model_options("missing.gguf", "cpu", "auto")
    with pytest.raises(Exception, match="unknown dtype"):
        seam.check_model_options(None, "cpu", "float8")
