"""The TUI's layering and ownership rules, read from its source (AST): views shape data without
rich or textual, no widget imports a screen, only the app assigns the app's attributes, and no
module reaches into another object's `_private` attributes."""

from __future__ import annotations

import ast
import pathlib

import pytest

from tests.support.paths import ROOT

TUI = pathlib.Path(ROOT) / "tui"
OWNED = ["app.py", "state.py", "live.py", "branching.py", "commands.py", "text.py", "screens", "widgets", "views",
         "render"]


def modules(*parts: str) -> list[pathlib.Path]:
    out = []
    for part in parts:
        path = TUI / part
        out += sorted(path.rglob("*.py")) if path.is_dir() else [path]
    return out


def imported(tree: ast.AST) -> set[str]:
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return names


@pytest.mark.parametrize("path", modules("views"), ids=lambda p: p.name)
def test_views_shape_data_without_rich_or_textual(path):
    bad = {m for m in imported(ast.parse(path.read_text())) if m.split(".")[0] in ("rich", "textual", "torch")
           or m.startswith(("stepscope.tui.render", "stepscope.tui.widgets", "stepscope.tui.screens"))}
    assert not bad, f"{path.name} imports {sorted(bad)}"


@pytest.mark.parametrize("path", modules("widgets", "render"), ids=lambda p: f"{p.parent.name}/{p.name}")
def test_widgets_and_renderables_import_no_screen(path):
    bad = {m for m in imported(ast.parse(path.read_text())) if m.startswith(("stepscope.tui.screens", "stepscope.tui.app"))}
    assert not bad, f"{path.name} imports {sorted(bad)}"


@pytest.mark.parametrize("path", [p for p in modules(*OWNED) if p.name != "app.py"], ids=lambda p: f"{p.parent.name}/{p.name}")
def test_only_the_app_assigns_its_attributes(path):
    for node in ast.walk(ast.parse(path.read_text())):
        targets = node.targets if isinstance(node, ast.Assign) else [node.target] if isinstance(node, (ast.AugAssign, ast.AnnAssign)) else []
        for target in targets:
            if isinstance(target, ast.Attribute):
                owner = ast.unparse(target.value)
                assert owner not in ("app", "self.app", "self._app"), f"{path.name}:{node.lineno} assigns {ast.unparse(target)}"


@pytest.mark.parametrize("path", modules(*OWNED), ids=lambda p: f"{p.parent.name}/{p.name}")
def test_no_private_attribute_of_another_object(path):
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Attribute) and node.attr.startswith("_") and not node.attr.startswith("__"):
            owner = ast.unparse(node.value)
            assert owner in ("self", "cls", "super()"), f"{path.name}:{node.lineno} reads {owner}.{node.attr}"




@pytest.mark.parametrize("path", modules(*OWNED), ids=lambda p: f"{p.parent.name}/{p.name}")
def test_imports_at_module_top(path):
    for func in ast.walk(ast.parse(path.read_text())):
        if not isinstance(func, (ast.FunctionDef, ast.AsyncFunctionDef)):
            continue
        inner = [n for n in ast.walk(func) if isinstance(n, (ast.Import, ast.ImportFrom))]
        assert not inner, f"{path.name}:{inner[0].lineno if inner else ''} imports inside {func.name}()"
