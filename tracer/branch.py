"""Branches of a live session: at step t choose another token (or intervene) and continue from there.

    tree = BranchSet(session)                         # the session's run is the root, kept as it is
    b = tree.branch(step=3, token=1234)               # forced token at step 3, named "b1"
    b.run()                                           # steps 3.. recorded in <trace>/branches/b1/
    tree.switch("")                                   # back to the root run; tree.list() names them all

A branch reuses its parent's KV cache cropped to the branch point (a copy of the cache, the
parent keeps its own): the shared prefix is never recomputed. Step t itself is recomputed (its
input is the parent's), then sampled, forced or intervened.

On disk a branch is `<parent>/branches/<name>/`: a trace whose steps.jsonl lists only its own
steps (t, t+1, ...) and whose manifest holds `branch` = {"parent": "../..", "name", "step",
"reason", "interventions", "parent_checksums"}. Its reader takes steps 0..t-1 from the enclosing
trace (and from that trace's parent when it is a branch too), checking their checksums against the
ones the branch recorded; it never follows another path. `save_self_contained` writes a branch as an
ordinary trace (copies of the shared steps plus its own).
"""

from __future__ import annotations

import copy
import datetime as _dt
import os
import re
import time

import numpy as np

from .trace_format import MANIFEST, TraceError

BRANCHES = "branches"
PARENT = "../.."  # the only parent a branch may name: the trace enclosing its branches/ directory
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}\Z")
MAX_NESTING = 16
_BRANCH_KEYS = {"parent", "name", "step", "reason", "interventions", "parent_checksums", "cache", "points"}


class BranchError(ValueError):
    """A branch cannot be made or opened (one line for the user)."""


# -- on disk: reading ------------------------------------------------------------------------------
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
        path = os.path.join(path, BRANCHES, check_name(part))
    return path


def _field(path: str, manifest: dict) -> dict:
    """The validated `branch` field of a branch directory's manifest."""
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
    if os.path.basename(os.path.dirname(here)) != BRANCHES or os.path.basename(here) != info["name"]:
        raise TraceError(f"{label}: a branch lives in <trace>/{BRANCHES}/{info['name']}/, not at {path}")
    if here.split(os.sep).count(BRANCHES) > MAX_NESTING:
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


def parent_steps(path: str, manifest: dict) -> list[dict]:
    """The parent's step entries before the branch point (the reader calls this for a branch):
    the parent is read and validated as a trace, and must be the same model, prompt and steps
    (checksums) the branch was made from."""
    from .reader import read_manifest

    info = _field(path, manifest)
    parent = read_manifest(parent_dir(path))
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
    from .reader import parse_json
    from .safe_io import open_dir, read_in_dir
    from .schema import MAX_MANIFEST_BYTES

    root = os.path.join(trace_dir, BRANCHES)
    if prefix.count("/") >= MAX_NESTING or not os.path.isdir(root) or os.path.islink(root):
        return []
    out = []
    for name in sorted(os.listdir(root)):
        path = os.path.join(root, name)
        if not NAME.match(name) or os.path.islink(path) or not os.path.isdir(path):
            continue
        full = prefix + name
        item = {"name": full, "path": path}
        try:
            fd = open_dir(path)
            try:
                m = parse_json(read_in_dir(fd, MANIFEST, MAX_MANIFEST_BYTES, f"{path}: {MANIFEST}"), MANIFEST)
            finally:
                os.close(fd)
            info = _field(path, m if type(m) is dict else {})
            item.update(step=info["step"], reason=info.get("reason"), interventions=info.get("interventions") or [])
        except (TraceError, FileNotFoundError) as exc:
            item["error"] = str(exc)
        out.append(item)
        out += list_branches(path, full + "/")
    return out


def describe(item: dict) -> str:
    """One inert line for a `list_branches` item: name, branch point, forced tokens, interventions."""
    from .inert import inert

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


def save_self_contained(trace, dst: str) -> str:
    """Write `trace` (a branch or any trace) to `dst` as an ordinary trace: every step file copied
    from wherever it lives, the manifest's `branch` kept as `branched_from` (where and why)."""
    from .writer import copy_trace

    manifest = {k: v for k, v in trace.manifest.items() if k != "branch"}
    if trace.manifest.get("branch") is not None:
        b = trace.manifest["branch"]
        manifest["branched_from"] = {k: b[k] for k in ("name", "step", "reason", "interventions") if k in b}
    manifest["steps"] = [s._entry for s in trace.steps._steps]
    sources = {s._entry["file"]: s.path for s in trace.steps._steps}
    sources["lens.safetensors"] = os.path.join(trace.root, "lens.safetensors")
    return copy_trace(manifest, trace.path, dst, sources)


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


# -- live: making branches -------------------------------------------------------------------------
def _session_types():
    from .session import LiveSession
    from .writer import TraceWriter

    class EntryWriter(TraceWriter):
        """A TraceWriter whose next entries get `extra` fields (forced, intervened)."""

        extra: dict = {}

        def add_step(self, arrays, entry, token=None):
            super().add_step(arrays, {**entry, **self.extra}, token)

    return LiveSession, EntryWriter


def _forced_record(record: dict, forced: int, logits) -> dict:
    """The sampler's record with the forced token as the chosen one (what was sampled kept)."""
    import torch

    raw = logits.detach().float().cpu()  # [vocab]
    raw_probs = torch.softmax(raw, -1)
    temp = record.get("temperature") or 1.0
    out = dict(record)
    out.update(
        forced=True,
        sampled_id=record.get("chosen_id"),
        chosen_id=int(forced),
        chosen_rank=int((raw > raw[forced]).sum()),
        chosen_raw_prob=float(raw_probs[forced]),
        chosen_temp_prob=float(torch.softmax(raw / temp, -1)[forced]),
        chosen_prob=0.0,  # set below when the final distribution kept it
    )
    return out


def make_branch_session(parent, step: int, name: str, force: list[int], interventions: list, max_new_tokens: int | None,
                        reason: dict):
    """A live session continuing `parent`'s run from step `step` (see BranchSet.branch)."""
    import torch

    from .interventions import applied, check
    from .reader import Trace
    from .sampler import Sampler
    from .staging import HostStager

    LiveSession, EntryWriter = _session_types()

    class BranchSession(LiveSession):
        """A LiveSession whose first steps are its parent's; `step()` forces tokens and applies interventions."""

        def __init__(self):  # noqa: D401 - built from the parent, not from a model spec
            parent.writer.flush()
            done = len(parent.writer.manifest["steps"])
            if done < 1 or not 0 <= step <= done:
                raise BranchError(f"cannot branch at step {step}: the run has steps 0..{done - 1}" if done else "cannot branch before the first step")
            for attr in ("settings", "model", "tokenizer", "adapter", "name", "chat", "prompt_ids", "store_dtype", "keep",
                         "device", "lens_facts", "eager_lens", "lens_resid_rows", "recorder", "_cache_kw", "eos", "special"):
                setattr(self, attr, getattr(parent, attr))
            self.root_session = getattr(parent, "root_session", parent)
            self.parent_session = parent
            self.interventions = list(interventions)
            check(self.adapter, self.interventions, parent.writer.manifest["model"])
            self.force = list(force)
            self.branch_step = step
            n_ctx = parent.writer.manifest["model"].get("n_ctx")
            want = max(max_new_tokens or parent.max_new_tokens, step + len(self.force), step + 1)
            self.max_new_tokens = min(want, n_ctx - len(self.prompt_ids)) if n_ctx else want
            self.sampler = Sampler(self.settings)
            self.profile = None
            self._own_dir = False
            self.path = os.path.join(parent.path, BRANCHES, check_name(name))
            if os.path.lexists(self.path):
                raise BranchError(f"a branch named {name!r} already exists in {parent.path}")
            early = [iv.tensor for iv in self.interventions if iv.from_step < step]
            if early:
                raise BranchError(f"an intervention on {early[0]} starts before step {step}: branch at its first step")
            pm = parent.writer.manifest
            p_len = len(self.prompt_ids)
            start = 0 if step == 0 else p_len + step - 1  # first position step `step` computes
            self.cache, how = branch_cache(parent, step, start, [int(t["id"]) for t in pm["tokens"][:start]])
            os.makedirs(os.path.dirname(self.path), exist_ok=True)
            shared = [dict(e) for e in pm["steps"][:step]]
            up = pm.get("branch") or {}
            manifest = {k: copy.deepcopy(v) for k, v in pm.items() if k not in ("steps", "tokens", "branch", "finished", "stop_reason")}
            manifest.update(
                created=_dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
                generation={**pm["generation"], "max_new_tokens": self.max_new_tokens},
                tokens=[dict(t) for t in pm["tokens"][: p_len + step]],
                steps=shared,
                finished=False,
                stop_reason=None,
                branch={
                    "parent": PARENT,
                    "name": name,
                    "step": step,
                    "reason": reason,
                    "interventions": [iv.describe() for iv in self.interventions],
                    "parent_checksums": [e["checksum"] for e in shared],
                    "points": [step, *up.get("points", [])],
                    "cache": how,
                },
            )
            self.writer = EntryWriter(self.path, manifest, background=False)
            self._save_tokenizer()
            self.stager = HostStager(self.device, self.store_dtype)
            self.trace = Trace(self.path, self.writer.manifest)
            self._next_ids = list(self.prompt_ids) if step == 0 else [int(pm["tokens"][p_len + step - 1]["id"])]
            self._steps_started = step
            self.finished, self.stop_reason, self._closed = False, None, False

        def _ensure_recording(self) -> None:
            """The recorder and traced attention in place (the root session may have closed)."""
            from .attention import IMPLEMENTATION
            from .attention import register as register_attention

            register_attention()
            if self.model.config._attn_implementation != IMPLEMENTATION:
                self.model.set_attn_implementation(IMPLEMENTATION)
            self.recorder.install()

        def step(self):
            """Compute, record and write the next step, forced/intervened as the branch says."""
            if self.finished or self._closed:
                return None
            index = self._steps_started
            start = 0 if index == 0 else len(self.prompt_ids) + index - 1
            self._ensure_recording()
            ids = torch.tensor([self._next_ids], device=self.device)  # [1, T]
            t0 = time.perf_counter()
            with applied(self.adapter, self.interventions, index, start) as edited:  # hooks removed in a finally
                out, arrays = self.capture(lambda: self.model(input_ids=ids, use_cache=True, **{self._cache_kw: self.cache}))
            with torch.no_grad():
                chosen, record, sample_arrays = self.sampler(out.logits[0, -1])
            extra = {}
            k = index - self.branch_step
            if 0 <= k < len(self.force):
                forced = self.force[k]
                record = _forced_record(record, forced, out.logits[0, -1])
                hit = np.nonzero(sample_arrays["sample.candidate_ids"] == forced)[0]
                if hit.size:
                    record["chosen_prob"] = float(sample_arrays["sample.candidate_probs"][hit[0]])
                chosen, extra["forced"] = forced, True
            if edited:
                extra["intervened"] = edited
            arrays.update(sample_arrays)
            self.writer.extra = extra
            return self.commit(arrays, chosen, record, ids.shape[1], time.perf_counter() - t0)

        def save(self, path: str) -> str:
            """A self-contained copy (shared steps copied from the parents)."""
            self.writer.flush()
            return save_self_contained(self.trace, path)

        def close(self, stop_reason: str | None = None) -> None:
            if self._closed:
                return
            self._closed = True
            try:
                root = self.root_session
                if root._closed:  # the root took the recorder out and restored the attention; step() put them back
                    self.recorder.remove()
                    if root._previous_attn not in (None, self.model.config._attn_implementation):
                        self.model.set_attn_implementation(root._previous_attn)
            finally:
                self.writer.close(finished=self.finished, stop_reason=self.stop_reason or stop_reason)
            self._sync_trace() if self.writer.steps_written else None

    return BranchSession()


def record_past(cache) -> None:
    """Sliding-window cache layers keep the states a later crop needs (transformers' own switch)."""
    for layer in getattr(cache, "layers", []):
        if getattr(layer, "is_sliding", False) and hasattr(layer, "activate_past_recording"):
            layer.activate_past_recording()


def _needs_recompute(cache) -> bool:
    """A cache layer holding a recurrent state (linear attention), which crop() does not roll back."""
    return any(hasattr(layer, "recurrent_states") for layer in getattr(cache, "layers", []))


def _holds(cache, start: int) -> bool:
    """Every sliding-window layer holds the keys a cache of `start` positions would."""
    for layer in getattr(cache, "layers", []):
        if getattr(layer, "is_sliding", False) and getattr(layer, "keys", None) is not None:
            if layer.keys.shape[-2] != min(start, layer.sliding_window - 1) or layer.get_seq_length() != start:
                return False
    return True


def branch_cache(parent, step: int, start: int, ids: list[int]):
    """(cache holding positions 0..start-1, how): the parent's cache copied and cropped ("cropped"),
    or, where a layer's state cannot be cropped (a recurrent state; a sliding window whose past was
    not kept), rebuilt by one unrecorded forward over those positions ("recomputed: why")."""
    import torch
    from transformers import DynamicCache

    model = parent.model
    if start == 0:
        cache = DynamicCache(config=model.config)
        record_past(cache)
        return cache, "new"
    have = parent.cache.get_seq_length()
    if have < start:
        raise BranchError(f"cannot branch there: the parent's cache holds {have} positions, the branch needs {start}")
    why = "a recurrent state cannot be cropped" if _needs_recompute(parent.cache) else None
    if why is None:
        cache = copy.deepcopy(parent.cache)  # the parent keeps its own cache
        try:
            if have > start:
                cache.crop(start - have)
            if not _holds(cache, start):
                raise RuntimeError("a sliding window's past was not kept (BranchSet made after the first step)")
            record_past(cache)
            return cache, "cropped"
        except (RuntimeError, ValueError, NotImplementedError, TypeError) as exc:
            why = str(exc).splitlines()[0][:120]
    run = parent
    while run is not None:  # a recomputed prefix would miss the interventions applied to it
        if any(iv.from_step < step for iv in getattr(run, "interventions", [])):
            raise BranchError(f"cannot branch at step {step}: this cache cannot be cropped ({why}) and the steps before hold interventions")
        run = getattr(run, "parent_session", None)
    cache = DynamicCache(config=model.config)
    record_past(cache)
    with torch.no_grad():  # the recorder is not capturing: nothing is recorded or written
        model(input_ids=torch.tensor([ids], device=parent.device), use_cache=True, **{parent._cache_kw: cache})
    return cache, f"recomputed: {why}"


class BranchSet:
    """The runs of one live session: the root ("") and its branches ("b1", "b1/b2"), one current."""

    def __init__(self, root):
        self.sessions = {"": root}
        self.current = ""
        self._count = 0
        if root.cache.get_seq_length() == 0:  # before the first step: sliding-window layers can then be cropped
            record_past(root.cache)

    @property
    def session(self):
        return self.sessions[self.current]

    def branch(self, step: int, token: int | None = None, text: str | None = None, interventions=(), name: str | None = None,
               parent: str | None = None, max_new_tokens: int | None = None, why: str | None = None):
        """A new branch of run `parent` (default: the current one) at step `step`: the token chosen
        there forced to `token` (an id) or to the tokens of `text` (successive steps), and/or the
        interventions applied from their steps. It becomes the current run; returns its session."""
        parent_key = self.current if parent is None else parent
        if parent_key not in self.sessions:
            raise BranchError(f"no run named {parent_key!r}")
        session = self.sessions[parent_key]
        force = []
        if token is not None:
            vocab = session.writer.manifest["model"].get("vocab_size") or 0
            if not (isinstance(token, int) and 0 <= token < vocab):
                raise BranchError(f"token id {token} is out of range (vocabulary of {vocab})")
            force = [int(token)]
        elif text is not None:
            force = [int(i) for i in session.tokenizer(text, add_special_tokens=False)["input_ids"]]
            if not force:
                raise BranchError("the forced text has no tokens")
        if not force and not interventions:
            raise BranchError("a branch forces a token or applies an intervention")
        if name is None:
            while True:
                self._count += 1
                name = f"b{self._count}"
                if os.path.join(parent_key, name).lstrip("/") not in self.sessions and not os.path.lexists(
                        os.path.join(session.path, BRANCHES, name)):
                    break
        reason = {"forced": [{"id": t, "text": session.tokenizer.decode([t])} for t in force]} if force else {}
        if interventions:
            reason["interventions"] = len(interventions)
        if why:
            reason["note"] = why
        new = make_branch_session(session, step, name, force, list(interventions), max_new_tokens, reason)
        key = f"{parent_key}/{name}" if parent_key else name
        self.sessions[key] = new
        self.current = key
        return new

    def switch(self, name: str):
        """Make run `name` current ("" = the root); returns its session."""
        if name not in self.sessions:
            raise BranchError(f"no run named {name!r}")
        self.current = name
        return self.sessions[name]

    def list(self) -> list[dict]:
        """[{name, step, reason, steps, finished}] of the root ("") and every branch, in creation order."""
        out = []
        for key, s in self.sessions.items():
            b = s.writer.manifest.get("branch") or {}
            out.append({"name": key, "path": s.path, "step": b.get("step"), "reason": b.get("reason"),
                        "steps": len(s.writer.manifest["steps"]), "finished": s.finished, "current": key == self.current})
        return out

    def close(self) -> None:
        """Close every branch, then the root."""
        for key in reversed(list(self.sessions)):
            self.sessions[key].close()
