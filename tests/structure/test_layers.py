"""The layers declared in pyproject's import-linter contracts hold, function-level imports included."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tests.support.layout import build_layout
from tests.support.paths import ROOT

LINT_IMPORTS = os.path.join(os.path.dirname(sys.executable), "lint-imports")


@pytest.fixture(scope="module")
def layout() -> str:
    if not os.path.exists(LINT_IMPORTS):
        pytest.fail("import-linter is a test dependency: pip install -e '.[test]'")
    return build_layout()


def lint(layout: str, config: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": layout}
    return subprocess.run([LINT_IMPORTS, config, "--no-cache"], cwd=layout, env=env, capture_output=True, text=True,
                          timeout=300)


def test_the_import_contracts_are_kept(layout):
    res = lint(layout, os.path.join(ROOT, "pyproject.toml"))
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-2000:]
    assert "0 broken" in res.stdout


def test_a_contract_sees_imports_inside_functions(layout):
    """The seam imports the recording side inside its functions only: a contract forbidding that
    import must break, or the contracts above would prove nothing about function-level imports."""
    config = os.path.join(ROOT, "build", "seam-contract.toml")
    with open(config, "w") as f:
        f.write('[tool.importlinter]\nroot_packages = ["stepscope"]\ninclude_external_packages = true\n\n'
                '[[tool.importlinter.contracts]]\nname = "no recording side from the seam"\ntype = "forbidden"\n'
                'source_modules = ["stepscope.seam"]\nforbidden_modules = ["stepscope.tracer.session"]\n')
    res = lint(layout, config)
    assert res.returncode != 0 and "BROKEN" in res.stdout, res.stdout[-3000:]
