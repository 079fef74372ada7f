"""Rules of the design checked on the source itself: no import cycles, imports at module top (the seam
excepted), no string imports, and no private attribute of another object."""

from __future__ import annotations

import ast

from tests.support.source import SEAM, import_graph, package_modules


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    found: list[list[str]] = []
    counter = 0
    for root in sorted(graph):
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            advanced = False
            for child in children:
                if child not in graph:
                    continue
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph[child]))))
                    advanced = True
                    break
                if child in on_stack:
                    low[node] = min(low[node], index[child])
            if advanced:
                continue
            work.pop()
            if work:
                parent = work[-1][0]
                low[parent] = min(low[parent], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.append(sorted(component))
    return found


def test_the_cycle_finder_finds_a_cycle():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_cycles():
    assert _cycles(import_graph()) == []


def _in_function_imports(tree: ast.AST) -> list[int]:
    lines = []
    for fn in ast.walk(tree):
        if isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
            lines += [n.lineno for n in ast.walk(fn) if isinstance(n, (ast.Import, ast.ImportFrom))]
    return sorted(set(lines))


def test_the_import_check_finds_an_import_in_a_function():
    assert _in_function_imports(ast.parse("import os\ndef f():\n    import json\n")) == [3]


def test_imports_sit_at_module_top_except_in_the_seam():
    offenders = {
        m.name: lines for m in package_modules() if m.name != SEAM
        for lines in [_in_function_imports(m.tree)] if lines
    }
    assert offenders == {}


def test_no_string_imports():
    calls = []
    for m in package_modules():
        for node in ast.walk(m.tree):
            if isinstance(node, ast.Call):
                f = node.func
                name = f.attr if isinstance(f, ast.Attribute) else f.id if isinstance(f, ast.Name) else ""
                if name in ("import_module", "__import__", "find_spec") and m.name != SEAM:
                    calls.append(f"{m.name}:{node.lineno}")
    assert calls == []


def _foreign_privates(tree: ast.AST) -> list[str]:
    """`x._name` where x is not self/cls/super(), and `from m import _name`."""
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and node.attr.startswith("_") and not node.attr.startswith("__"):
            base = node.value
            if isinstance(base, ast.Name) and base.id in ("self", "cls"):
                continue
            if isinstance(base, ast.Call) and isinstance(base.func, ast.Name) and base.func.id == "super":
                continue
            found.append(f"{node.lineno}: .{node.attr}")
        elif isinstance(node, ast.ImportFrom):
            found += [f"{node.lineno}: import {a.name}" for a in node.names if a.name.startswith("_") and not a.name.startswith("__")]
    return found


INTERNALS = "stepscope.tracer.internals"  # torch's and transformers' private APIs, gathered in one module


def test_no_private_attribute_of_another_object():
    offenders = {
        m.name: hits for m in package_modules() if m.name != INTERNALS for hits in [_foreign_privates(m.tree)] if hits
    }
    assert offenders == {}


def test_the_private_check_finds_a_private_attribute():
    found = _foreign_privates(ast.parse("x = obj._hidden\nself._mine = 1\nfrom m import _helper\nsuper()._own()"))
    assert sorted(found) == ["1: ._hidden", "3: import _helper"]
