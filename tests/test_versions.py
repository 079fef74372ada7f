"""The transformers range pyproject.toml declares is the one scripts/check_transformers.sh tests,
and the installed transformers is inside it."""

from __future__ import annotations

import os
import re

import transformers
from packaging.specifiers import SpecifierSet
from packaging.version import Version

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


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
