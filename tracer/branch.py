"""Branches of a live session: at step t choose another token (or intervene) and continue from there.

    tree = BranchSet(session)                         # the session's run is the root, kept as it is
    b = tree.branch(step=3, token=1234)               # forced token at step 3, named "b1"
    b.run()                                           # steps 3.. recorded in <trace>/branches/b1/
    tree.switch("")                                   # back to the root run; tree.list() names them all

A branch reuses its parent's KV cache cropped to the branch point (a copy of the cache, the
parent keeps its own): the shared prefix is never recomputed. Step t itself is recomputed (its
input is the parent's), then sampled, forced or intervened.

The layout on disk, reading a branch and listing branches are tracer/branch_layout.py (no torch);
`save_self_contained` writes a branch as an ordinary trace (copies of the shared steps plus its own).
"""

from __future__ import annotations

import copy
import datetime as _dt
import os
import time

import numpy as np
import torch
from transformers import DynamicCache

from .attention import IMPLEMENTATION
from .attention import register as register_attention
from .branch_layout import PARENT, BranchError, check_name
from .internals import attn_implementation
from .interventions import applied, check
from .reader import Trace
from .sampler import Sampler
from .session import LiveSession, cache_kwarg
from .staging import HostStager
from .trace_format import BRANCHES_DIR, LENS_FILE
from .writer import TraceWriter, copy_trace


def save_self_contained(trace, dst: str) -> str:
    """Write `trace` (a branch or any trace) to `dst` as an ordinary trace: every step file copied
    from wherever it lives, the manifest's `branch` kept as `branched_from` (where and why)."""
    manifest = {k: v for k, v in trace.manifest.items() if k != "branch"}
    if trace.manifest.get("branch") is not None:
        b = trace.manifest["branch"]
        manifest["branched_from"] = {k: b[k] for k in ("name", "step", "reason", "interventions") if k in b}
    manifest["steps"] = trace.steps.entries
    sources = trace.steps.files
    sources[LENS_FILE] = os.path.join(trace.root, LENS_FILE)
    return copy_trace(manifest, trace.path, dst, sources)


# -- live: making branches -------------------------------------------------------------------------
class EntryWriter(TraceWriter):
    """A TraceWriter whose next entries get `extra` fields (forced, intervened)."""

    def __init__(self, path: str, manifest: dict, background: bool = True):
        super().__init__(path, manifest, background)
        self.extra: dict = {}

    def add_step(self, arrays, entry, token=None):
        super().add_step(arrays, {**entry, **self.extra}, token)


def _forced_record(record: dict, forced: int, logits) -> dict:
    """The sampler's record with the forced token as the chosen one (what was sampled kept)."""
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


class BranchSession(LiveSession):
    """A live session continuing `parent`'s run from step `step` (see BranchSet.branch): its first
    steps are its parent's, `step()` forces tokens and applies interventions.

    It runs on its parent's model: LiveSession.__init__ (which loads a model's state, writes a new
    trace and installs the recorder) is not called; the parent's model-bound state, SHARED, is
    used as it is, and everything a run owns (cache, writer, trace, sampler) is its own."""

    SHARED = ("settings", "model", "tokenizer", "adapter", "name", "chat", "prompt_ids", "store_dtype", "keep",
              "device", "lens_facts", "eager_lens", "lens_resid_rows", "recorder", "eos", "special")

    def __init__(self, parent: LiveSession, step: int, name: str, force: list[int], interventions: list,
                 max_new_tokens: int | None, reason: dict):
        parent.writer.flush()
        done = len(parent.writer.manifest["steps"])
        if done < 1 or not 0 <= step <= done:
            raise BranchError(f"cannot branch at step {step}: the run has steps 0..{done - 1}" if done else "cannot branch before the first step")
        for attr in self.SHARED:
            setattr(self, attr, getattr(parent, attr))
        self._cache_kw = cache_kwarg(self.model)
        self.root_session: LiveSession = parent.root_session if isinstance(parent, BranchSession) else parent
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
        self.path = os.path.join(parent.path, BRANCHES_DIR, check_name(name))
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
        register_attention()
        if attn_implementation(self.model) != IMPLEMENTATION:
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
            if root.closed:  # the root took the recorder out and restored the attention; step() put them back
                self.recorder.remove()
                if root.previous_attn not in (None, attn_implementation(self.model)):
                    self.model.set_attn_implementation(root.previous_attn)
        finally:
            self.writer.close(finished=self.finished, stop_reason=self.stop_reason or stop_reason)
        self._sync_trace() if self.writer.steps_written else None


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
        model(input_ids=torch.tensor([ids], device=parent.device), use_cache=True, **{cache_kwarg(model): cache})
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
                        os.path.join(session.path, BRANCHES_DIR, name)):
                    break
        reason: dict = {"forced": [{"id": t, "text": session.tokenizer.decode([t])} for t in force]} if force else {}
        if interventions:
            reason["interventions"] = len(interventions)
        if why:
            reason["note"] = why
        new = BranchSession(session, step, name, force, list(interventions), max_new_tokens, reason)
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
