"""Branches of a trace on disk, for the app (torch-free): the runs to switch between, where a
branch leaves its parent, and the effect on the chosen token's probability next to the parent."""

from __future__ import annotations

import os

from rich.text import Text

from stepscope.tracer.branch_layout import describe, effects, list_branches
from stepscope.tracer.inert import inert
from stepscope.tui.views.attribution import token


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


def effect_lines(branch, parent, step: int) -> list[Text]:
    """At `step`: the token each run chose and its probability in both runs (raw softmax), when
    `branch` is a branch of `parent` and the step is at or after the branch point."""
    rows = [e for e in effects(branch, parent) if e["step"] == step]
    if not rows:
        return []
    e = rows[0]

    def p(x) -> str:
        return "—" if x is None else f"{x:.3f}"

    lines = [Text.assemble(("effect ", "bold"), f"step {step}: original chose ", token(parent, e["parent_token"]),
                           f" p {p(e['parent_token_prob']['parent'])} → here {p(e['parent_token_prob']['branch'])}"),
             Text.assemble("  this run chose ", token(branch, e["branch_token"]),
                           f" p {p(e['branch_token_prob']['branch'])} (original {p(e['branch_token_prob']['parent'])})")]
    marks = (["forced"] if e["forced"] else []) + ([f"intervened: {inert(', '.join(e['intervened']), 80)}"] if e["intervened"] else [])
    if not e["same_context"]:
        marks.append("earlier tokens differ")
    if marks:
        lines.append(Text("  " + " · ".join(marks), style="dim"))
    return lines
