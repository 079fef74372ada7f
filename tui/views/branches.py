"""Branches of a trace on disk, for the app (torch-free): the runs to switch between, where a
branch leaves its parent, and the effect on the chosen token's probability next to the parent
(drawn by `tui.render.branches`)."""

from __future__ import annotations

import os

from stepscope.tracer.branch_layout import describe, effects, list_branches


def root_dir(trace) -> str:
    """The top trace directory of `trace` (itself, or the trace a branch belongs to)."""
    return getattr(trace, "root", None) or trace.path


def runs(trace) -> list[dict]:
    """The root run first ({"name": "", "path"}), then every readable branch under it ("b1", "b1/b2")."""
    root = root_dir(trace)
    return [{"name": "", "path": root}] + [b for b in list_branches(root) if "error" not in b]


def current_index(trace, items: list[dict]) -> int:
    here = os.path.realpath(trace.path)
    return next((i for i, item in enumerate(items) if os.path.realpath(item["path"]) == here), 0)


def parent_dir(trace) -> str | None:
    """The directory of the run a branch left (None for a plain trace)."""
    info = trace.manifest.get("branch")
    if not isinstance(info, dict) or not isinstance(info.get("parent"), str):
        return None
    return os.path.normpath(os.path.join(trace.path, info["parent"]))


def branch_point(trace) -> int | None:
    """Token position where a branch leaves its parent (the token chosen at its branch step), None for a plain trace."""
    info = trace.manifest.get("branch")
    if not isinstance(info, dict) or type(info.get("step")) is not int:
        return None
    return trace.prompt_len + info["step"]


def run_label(item: dict) -> str:
    """One inert line naming a run: "the original run" or the branch's description."""
    return "the original run" if not item["name"] else describe(item)


def branch_effect(branch, parent, step: int) -> dict | None:
    """At `step`: the token each run chose and its probability in both runs (raw softmax, the
    `tracer.branch.effects` row), when `branch` is a branch of `parent` and the step is at or after
    the branch point; else None."""
    rows = [e for e in effects(branch, parent) if e["step"] == step]
    return rows[0] if rows else None
