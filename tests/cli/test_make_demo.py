"""`make demo` records the demo trace once per settings and reuses it afterwards (a stand-in `stepscope` counts the recordings)."""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest

from tests.support.paths import ROOT

FAKE = """#!/bin/sh
# records its arguments and writes a manifest where --out says
echo "$@" >> "{log}"
while [ $# -gt 0 ]; do if [ "$1" = "--out" ]; then mkdir -p "$2"; echo '{{}}' > "$2/manifest.json"; fi; shift; done
"""


@pytest.mark.skipif(shutil.which("make") is None, reason="no make")
def test_demo_trace_is_reused_when_the_settings_match(tmp_path):
    venv = tmp_path / "venv"
    (venv / "bin").mkdir(parents=True)
    log = tmp_path / "calls.log"
    stepscope = venv / "bin" / "stepscope"
    stepscope.write_text(FAKE.format(log=log))
    stepscope.chmod(0o755)
    (venv / ".stepscope-ready").touch()  # set-up done: newer than pyproject.toml
    os.utime(venv / ".stepscope-ready", (2**31, 2**31))
    trace = tmp_path / "traces" / "paris"

    def demo(*extra):
        return subprocess.run(["make", "-s", "-C", ROOT, "demo-trace", f"VENV={venv}", f"TRACE={trace}", *extra],
                              capture_output=True, text=True, timeout=60)

    first = demo()
    assert first.returncode == 0, first.stderr
    assert (trace / "manifest.json").is_file() and log.read_text().count("--out") == 1
    second = demo()
    assert second.returncode == 0 and "reusing" in second.stdout
    assert log.read_text().count("--out") == 1  # not recorded again
    other = demo("TORCH_SPEC=torch")  # different settings: recorded again
    assert other.returncode == 0 and log.read_text().count("--out") == 2
    shutil.rmtree(trace)  # an incomplete or deleted trace is recorded again
    assert demo("TORCH_SPEC=torch").returncode == 0 and log.read_text().count("--out") == 3
