"""The transformers range pyproject.toml declares is the one scripts/check_transformers.sh tests,
and the installed transformers is inside it."""

from __future__ import annotations

import os
import re

import transformers
from packaging.specifiers import SpecifierSet
from packaging.version import Version

from tests.support.paths import ROOT


def _declared() -> SpecifierSet:
    with open(os.path.join(ROOT, "pyproject.toml"), encoding="utf-8") as fh:
        spec = re.search(r'"transformers([^"]+)"', fh.read()).group(1)
    return SpecifierSet(spec)


def _script_versions() -> dict[str, str]:
    with open(os.path.join(ROOT, "scripts", "check_transformers.sh"), encoding="utf-8") as fh:
        return dict(re.findall(r"^(OLDEST|NEWEST)=(\S+)", fh.read(), re.M))


def test_installed_transformers_is_in_the_declared_range():
    assert Version(transformers.__version__) in _declared()


def test_declared_range_is_the_tested_one():
    declared, tested = _declared(), _script_versions()
    lower = [s for s in declared if s.operator == ">="]
    assert len(lower) == 1 and Version(lower[0].version) == Version(tested["OLDEST"])
    assert Version(tested["NEWEST"]) in declared
    assert Version(tested["OLDEST"]) in declared


def test_an_adapter_refuses_a_transformers_older_than_its_modelling_code(monkeypatch):
    """gpt-oss, DeepSeek-V3 and Qwen3-Next need newer releases than pyproject's floor: one line."""
    import pytest

    from stepscope.tracer.adapters import registry
    from stepscope.tracer.adapters.base import UnsupportedModel
    from stepscope.tracer.adapters.registry import adapter_for
    from tests.support.tiny_models import tiny_model

    model = tiny_model("qwen3_next")
    adapter_for(model)  # the installed release is new enough
    assert registry.installed_transformers() == transformers.__version__
    monkeypatch.setattr(registry, "installed_transformers", lambda: "5.23.0")
    with pytest.raises(UnsupportedModel, match=r"qwen3_next needs transformers >= 5.24 \(installed: 5.23.0\)"):
        adapter_for(model)
