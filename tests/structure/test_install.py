"""Both installs give one import namespace, `stepscope`: the editable one the tests run under, and a
wheel installed into a fresh virtual environment (not editable), which carries the stylesheets and
runs as `stepscope` and `python -m stepscope`."""

from __future__ import annotations

import glob
import os
import site
import subprocess
import sys
import zipfile

import pytest

from tests.support.paths import FIXTURE, ROOT

PROBE = """
import importlib.util, sys
import stepscope, stepscope.tracer, stepscope.tui.app
assert importlib.util.find_spec("tracer") is None and importlib.util.find_spec("tui") is None
print(stepscope.__file__, stepscope.tracer.__file__)
"""


def run(cmd: list[str], cwd: str, timeout: int = 300) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


def test_the_editable_install_maps_the_repo_folders_into_the_namespace(tmp_path):
    res = run([sys.executable, "-c", PROBE], cwd=str(tmp_path))
    assert res.returncode == 0, res.stderr[-2000:]
    package, tracer = res.stdout.split()
    assert package == os.path.join(ROOT, "stepscope", "__init__.py")
    assert tracer == os.path.join(ROOT, "tracer", "__init__.py")


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> str:
    out = tmp_path_factory.mktemp("wheel")
    res = run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(out), ROOT], cwd=str(out), timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    (path,) = glob.glob(str(out / "stepscope-*.whl"))
    return path


def test_the_wheel_holds_one_top_level_package_and_the_stylesheets(wheel):
    names = zipfile.ZipFile(wheel).namelist()
    assert {n.split("/")[0] for n in names} == {"stepscope", os.path.basename(wheel).split("-py3")[0] + ".dist-info"}
    assert {"stepscope/tui/app.tcss", "stepscope/tui/widgets/panes.tcss"} <= set(names)
    assert "stepscope/tracer/reader.py" in names and "stepscope/cli/main.py" in names


def test_the_wheel_runs_from_a_fresh_environment(wheel, tmp_path):
    venv = tmp_path / "venv"
    assert run([sys.executable, "-m", "venv", str(venv)], cwd=str(tmp_path)).returncode == 0
    python, script = str(venv / "bin" / "python"), str(venv / "bin" / "stepscope")
    res = run([python, "-m", "pip", "install", "-q", "--no-deps", "--no-index", wheel], cwd=str(tmp_path))
    assert res.returncode == 0, res.stderr[-2000:]
    # the dependencies come from this environment's site-packages (not its editable stepscope: a path
    # added by a .pth file is not a site directory, so its own .pth files are not run)
    purelib = run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], cwd=str(tmp_path)).stdout.strip()
    with open(os.path.join(purelib, "stepscope-test-deps.pth"), "w") as f:
        f.write("\n".join(site.getsitepackages()) + "\n")

    res = run([python, "-c", PROBE], cwd=str(tmp_path))
    assert res.returncode == 0, res.stderr[-2000:]
    assert res.stdout.split()[0].startswith(purelib)
    for cmd in ([script, "--help"], [python, "-m", "stepscope", "--help"]):
        res = run(cmd, cwd=str(tmp_path))
        assert res.returncode == 0 and "view" in res.stdout, res.stderr[-2000:]
    res = run([script, "info", FIXTURE], cwd=str(tmp_path))
    assert res.returncode == 0 and "steps" in res.stdout, res.stdout[-2000:] + res.stderr[-2000:]
    app = (
        "import asyncio\nfrom stepscope.tracer import load_trace\nfrom stepscope.tui.app import StepscopeApp\n"
        "async def main():\n    app = StepscopeApp(trace=load_trace(%r))\n"
        "    async with app.run_test(size=(100, 30)) as pilot:\n        await pilot.press('n')\n        await pilot.pause()\n"
        "        assert app.step == 1 and app.stylesheet.rules, 'no styles'\n"
        "asyncio.run(main())\nprint('ok')\n" % FIXTURE
    )
    res = run([python, "-c", app], cwd=str(tmp_path))
    assert res.returncode == 0 and res.stdout.strip().endswith("ok"), res.stderr[-3000:]
