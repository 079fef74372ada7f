"""mypy passes on the whole package, read as the installed namespace (`make lint` runs the same command)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tests.support.layout import build_layout
from tests.support.paths import ROOT

MYPY = os.path.join(os.path.dirname(sys.executable), "mypy")


def mypy_command() -> list[str]:
    return [MYPY, "--config-file", os.path.join(ROOT, "pyproject.toml"), "--cache-dir", os.path.join(ROOT, "build", "mypy-cache"),
            "-p", "stepscope"]


def test_mypy_passes_on_the_package():
    if not os.path.exists(MYPY):
        pytest.fail("mypy is a test dependency: pip install -e '.[test]'")
    layout = build_layout()
    res = subprocess.run(mypy_command(), cwd=layout, env={**os.environ, "MYPYPATH": layout},
                         capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stdout[-4000:] + res.stderr[-2000:]
    assert "Success" in res.stdout
