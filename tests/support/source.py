"""The package's own source as the installed namespace sees it: module names, syntax trees, imports."""

from __future__ import annotations

import ast
import os
from dataclasses import dataclass
from functools import cache

import tomllib

from tests.support.paths import ROOT

SEAM = "stepscope.seam"


@dataclass(frozen=True)
class Module:
    name: str  # dotted name in the installed namespace, e.g. stepscope.tracer.reader
    path: str  # file in the repo
    tree: ast.Module

    @property
    def is_package(self) -> bool:
        return os.path.basename(self.path) == "__init__.py"


@cache
def package_dirs() -> dict[str, str]:
    """pyproject's package-dir: installed package -> repo folder."""
    with open(os.path.join(ROOT, "pyproject.toml"), "rb") as f:
        return dict(tomllib.load(f)["tool"]["setuptools"]["package-dir"])


@cache
def package_modules() -> tuple[Module, ...]:
    found = {}
    for package, folder in package_dirs().items():
        base = os.path.join(ROOT, folder)
        for dirpath, dirnames, filenames in os.walk(base):
            dirnames[:] = [d for d in dirnames if d != "__pycache__"]
            rel = os.path.relpath(dirpath, base)
            parts = [package] + ([] if rel == "." else rel.split(os.sep))
            if ".".join(parts) in package_dirs() and ".".join(parts) != package:
                continue  # mapped separately
            for fn in filenames:
                if not fn.endswith(".py"):
                    continue
                name = ".".join(parts if fn == "__init__.py" else parts + [fn[:-3]])
                path = os.path.join(dirpath, fn)
                with open(path, encoding="utf-8") as f:
                    found[name] = Module(name, path, ast.parse(f.read(), path))
    return tuple(sorted(found.values(), key=lambda m: m.name))


def _resolve(module: Module, node: ast.ImportFrom) -> str:
    if not node.level:
        return node.module or ""
    parts = module.name.split(".")
    keep = len(parts) - node.level + (1 if module.is_package else 0)
    return ".".join(parts[:keep] + ([node.module] if node.module else []))


def imports_of(module: Module, known: set[str]) -> set[str]:
    """Every module this one imports, at any depth of its body; `from pkg import sub` names pkg.sub."""
    out: set[str] = set()
    for node in ast.walk(module.tree):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            target = _resolve(module, node)
            subs = {f"{target}.{a.name}" for a in node.names} & known
            out.update(subs or {target})
    return out


@cache
def import_graph() -> dict[str, set[str]]:
    """Internal edges only: module -> the package modules it imports."""
    mods = package_modules()
    known = {m.name for m in mods}
    return {m.name: {t for t in imports_of(m, known) if t in known and t != m.name} for m in mods}
