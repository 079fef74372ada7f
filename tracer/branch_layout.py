"""Branches on disk, the reading side (numpy only): where a branch lives, which steps it shares, listing.

On disk a branch is `<parent>/branches/<name>/`: a trace whose steps.jsonl lists only its own
steps (t, t+1, ...) and whose manifest holds `branch` = {"parent": "../..", "name", "step",
"reason", "interventions", "parent_checksums"}. Its reader takes steps 0..t-1 from the enclosing
trace (and from that trace's parent when it is a branch too), checking their checksums against the
ones the branch recorded; it never follows another path. Making branches is tracer/branch.py.
"""

from __future__ import annotations

import os
import re

import numpy as np

from .inert import inert
from .safe_io import open_dir, read_in_dir
from .schema import MAX_MANIFEST_BYTES, parse_json
from .trace_format import BRANCHES_DIR, MANIFEST, TraceError

PARENT = "../.."  # the only parent a branch may name: the trace enclosing its branches/ directory
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}\Z")
MAX_NESTING = 16
_BRANCH_KEYS = {"parent", "name", "step", "reason", "interventions", "parent_checksums", "cache", "points"}


class BranchError(ValueError):
    """A branch cannot be made or opened (one line for the user)."""


# -- on disk ------------------------------------------------------------------------------
def check_name(name: object) -> str:
    if not isinstance(name, str) or not NAME.match(name) or name in (".", ".."):
        raise BranchError(f"bad branch name {str(name)[:70]!r}: letters, digits, '.', '_' and '-' (64 at most)")
    return name


def branch_path(trace_dir: str, name: str) -> str:
    """Directory of branch `name` ("b1", or "b1/b2" for a branch of b1) of the trace at `trace_dir`."""
    path = trace_dir
    parts = name.split("/")
    if len(parts) > MAX_NESTING:
        raise BranchError(f"branch {name[:70]!r} is nested more than {MAX_NESTING} deep")
    for part in parts:
        path = os.path.join(path, BRANCHES_DIR, check_name(part))
    return path


def branch_field(path: str, manifest: dict) -> dict:
    """The validated `branch` field of a branch directory's manifest (TraceError otherwise)."""
    info = manifest.get("branch")
    label = f"{path}: manifest.branch"
    if type(info) is not dict or not {"parent", "name", "step"} <= set(info) or set(info) - _BRANCH_KEYS:
        raise TraceError(f"{label}: expected an object with parent, name, step (and reason, interventions, parent_checksums)")
    if info["parent"] != PARENT:
        raise TraceError(f"{label}.parent: a branch's parent is its enclosing trace ({PARENT!r}), got {str(info['parent'])[:60]!r}")
    try:
        check_name(info["name"])
    except BranchError as exc:
        raise TraceError(f"{label}.name: {exc}") from None
    here = os.path.abspath(path)
    if os.path.basename(os.path.dirname(here)) != BRANCHES_DIR or os.path.basename(here) != info["name"]:
        raise TraceError(f"{label}: a branch lives in <trace>/{BRANCHES_DIR}/{info['name']}/, not at {path}")
    if here.split(os.sep).count(BRANCHES_DIR) > MAX_NESTING:
        raise TraceError(f"{label}: branches nested more than {MAX_NESTING} deep")
    step = info["step"]
    if type(step) is not int or not 0 <= step <= 1 << 31:
        raise TraceError(f"{label}.step: expected an int >= 0, got {str(step)[:40]}")
    if type(info.get("reason", {})) is not dict or type(info.get("interventions", [])) is not list:
        raise TraceError(f"{label}: reason must be an object and interventions a list")
    sums = info.get("parent_checksums", [])
    if type(sums) is not list or len(sums) != step or any(type(c) is not str or len(c) > 40 for c in sums):
        raise TraceError(f"{label}.parent_checksums: expected the {step} checksums of the shared steps")
    return info


def parent_dir(path: str) -> str:
    return os.path.dirname(os.path.dirname(os.path.abspath(path)))


_SAME_MODEL = ("name", "family", "n_layers", "d_model", "n_heads", "vocab_size")


def shared_steps(path: str, manifest: dict, parent: dict) -> list[dict]:
    """The parent's step entries before the branch point (the reader calls this for a branch with
    the validated manifest of its parent_dir): the parent must be the same model, prompt and steps
    (checksums) the branch was made from."""
    info = branch_field(path, manifest)
    step = info["step"]
    label = f"{path}: branch {info['name']!r}"
    if any(parent["model"].get(k) != manifest["model"].get(k) for k in _SAME_MODEL):
        raise TraceError(f"{label}: its parent trace is another model")
    prompt = [t["id"] for t in parent["tokens"][: parent["prompt_len"]]]
    if parent["prompt_len"] != manifest["prompt_len"] or prompt != [t["id"] for t in manifest["tokens"]]:
        raise TraceError(f"{label}: its parent trace has another prompt")
    if len(parent["steps"]) < step:
        raise TraceError(f"{label}: branches at step {step}, its parent has {len(parent['steps'])} steps")
    shared = parent["steps"][:step]
    if [e.get("checksum") for e in shared] != info.get("parent_checksums", []):
        raise TraceError(f"{label}: its parent's steps before step {step} changed since the branch was made")
    up = parent.get("branch") or {}
    info["points"] = [step, *up.get("points", [])]  # in memory: branch points up the chain (step_dirs)
    return [dict(e) for e in shared]


def step_dirs(path: str, manifest: dict) -> list[str]:
    """Directory of each shared step of a branch (its parent's, or further up for a branch of a branch)."""
    points = manifest["branch"].get("points") or [manifest["branch"]["step"]]
    out = []
    for i in range(points[0]):
        d = parent_dir(path)
        for p in points[1:]:
            if i >= p:
                break
            d = parent_dir(d)
        out.append(d)
    return out


def root_dir(path: str, manifest: dict) -> str:
    """The trace at the top of a branch's chain (it holds lens.safetensors)."""
    d = path
    for _ in manifest["branch"].get("points") or [manifest["branch"]["step"]]:
        d = parent_dir(d)
    return d


def list_branches(trace_dir: str, prefix: str = "") -> list[dict]:
    """Every branch under a trace, nested ones as "b1/b2": {name, path, step, reason, interventions}.
    Reads each branch's manifest only (safely); a damaged one is listed with its error."""
    root = os.path.join(trace_dir, BRANCHES_DIR)
    if prefix.count("/") >= MAX_NESTING or not os.path.isdir(root) or os.path.islink(root):
        return []
    out = []
    for name in sorted(os.listdir(root)):
        path = os.path.join(root, name)
        if not NAME.match(name) or os.path.islink(path) or not os.path.isdir(path):
            continue
        full = prefix + name
        item: dict = {"name": full, "path": path}
        try:
            fd = open_dir(path)
            try:
                m = parse_json(read_in_dir(fd, MANIFEST, MAX_MANIFEST_BYTES, f"{path}: {MANIFEST}"), MANIFEST)
            finally:
                os.close(fd)
            info = branch_field(path, m if type(m) is dict else {})
            item.update(step=info["step"], reason=info.get("reason"), interventions=info.get("interventions") or [])
        except (TraceError, FileNotFoundError) as exc:
            item["error"] = str(exc)
        out.append(item)
        out += list_branches(path, full + "/")
    return out


def describe(item: dict) -> str:
    """One inert line for a `list_branches` item: name, branch point, forced tokens, interventions."""
    if "error" in item:
        return inert(f"{item['name']}: unreadable ({item['error']})", 300)
    parts = [f"{item['name']}: from step {item['step']}"]
    reason = item.get("reason") or {}
    forced = reason.get("forced") if type(reason.get("forced")) is list else []
    if forced:
        text = "".join(str(t.get("text", "")) for t in forced if type(t) is dict)
        parts.append(f"forced {text[:60]!r}")
    ivs = [iv for iv in item.get("interventions") or [] if type(iv) is dict]
    if ivs:
        parts.append(", ".join(f"{iv.get('kind')} {iv.get('tensor')}" + (f" head {iv['head']}" if "head" in iv else "")
                               for iv in ivs[:4]) + (" …" if len(ivs) > 4 else ""))
    if type(reason.get("note")) is str:
        parts.append(reason["note"][:80])
    return inert("; ".join(parts), 300)


# -- effect of a branch on token probabilities -----------------------------------------------------
def probability_of(step, token_id: int) -> float | None:
    """The model's probability (raw softmax of the last logits row) of `token_id` at a step:
    from the recorded logits, else from the stored candidates; None when neither has it."""
    if "logits" in step:
        row = np.asarray(step["logits"][-1], dtype=np.float64)  # [vocab]
        row = np.exp(row - row.max())
        return float(row[token_id] / row.sum())
    if "sample.candidate_ids" in step:
        ids = np.asarray(step["sample.candidate_ids"])
        hit = np.nonzero(ids == token_id)[0]
        if hit.size:
            return float(step["sample.candidate_raw_probs"][hit[0]])
    return None


def effects(branch, parent) -> list[dict]:
    """Per step of `branch` from its branch point, next to the same step of `parent` (the
    unintervened run): the probability of the token the parent chose and of the one the branch
    chose, in both runs. `same_context` is False once the two runs' earlier tokens differ."""
    info = branch.manifest.get("branch") or {}
    first = int(info.get("step", 0))
    p_len = branch.prompt_len
    out = []
    for i in range(first, min(len(branch.steps), len(parent.steps))):
        b, p = branch.steps[i], parent.steps[i]
        ids_b = [t["id"] for t in branch.tokens[: p_len + i]]
        ids_p = [t["id"] for t in parent.tokens[: p_len + i]]
        tb, tp = b.token["id"], p.token["id"]
        out.append({
            "step": i,
            "same_context": ids_b == ids_p,
            "parent_token": tp,
            "branch_token": tb,
            "parent_token_prob": {"parent": probability_of(p, tp), "branch": probability_of(b, tp)},
            "branch_token_prob": {"parent": probability_of(p, tb), "branch": probability_of(b, tb)},
            "intervened": b.intervened,
            "forced": b.forced,
        })
    return out
