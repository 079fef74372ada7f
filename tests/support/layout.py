"""The installed namespace as a folder of links: build/layout/stepscope/{tracer,tui,...} point into the
repository, so tools that read packages from the file system (import-linter's grimp, mypy) see
`stepscope.tracer.reader` where pyproject's package-dir puts it. `python -m tests.support.layout`
builds it and prints the folder to put on the path."""

from __future__ import annotations

import os
import shutil

from tests.support.paths import ROOT
from tests.support.source import package_dirs

LAYOUT = os.path.join(ROOT, "build", "layout")


def build_layout() -> str:
    """(Re)build the link tree and return the folder holding `stepscope`."""
    shutil.rmtree(LAYOUT, ignore_errors=True)
    dirs = package_dirs()  # {"stepscope": "stepscope", "stepscope.tracer": "tracer", ...}
    top = os.path.join(LAYOUT, "stepscope")
    os.makedirs(top)
    mapped = {package.split(".", 1)[1]: folder for package, folder in dirs.items() if "." in package}
    for entry in os.listdir(os.path.join(ROOT, dirs["stepscope"])):
        if entry != "__pycache__" and entry not in mapped:
            os.symlink(os.path.join(ROOT, dirs["stepscope"], entry), os.path.join(top, entry))
    for name, folder in mapped.items():
        os.symlink(os.path.join(ROOT, folder), os.path.join(top, name))
    return LAYOUT


if __name__ == "__main__":
    print(build_layout())
