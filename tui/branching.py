"""Live branches in the app: force another token at the cursor's step (a branch of the live run,
its KV cache cropped to the branch point by tracer.branch) and switch between the runs.

The branch is made and its first (forced) step computed in a thread worker (`branch_worker`),
under the session lock; the worker posts `BranchMade` (copies) and the app, on the UI thread,
builds its own Trace of the branch."""

from __future__ import annotations

import copy
from collections.abc import Callable

from textual.message import Message

from stepscope import seam
from stepscope.tracer import load_trace
from stepscope.tracer.inert import inert
from stepscope.tracer.names import block_name
from stepscope.tui.live_settings import session_settings
from stepscope.tui.views.attribution import rivals
from stepscope.tui.views.vocab import token_texts


class BranchMade(Message):
    """A branch exists and its forced step is computed: the app switches to it. `manifest` is a
    copy of the branch's manifest (the parent's shared steps and the new one), `settings` of its
    sampler settings and token limit, `finished`/`stop_reason` its state."""

    def __init__(self, name: str, session, path: str, manifest: dict, step: int, settings: dict, finished: bool,
                 stop_reason: str | None) -> None:
        super().__init__()
        self.name, self.session, self.path, self.manifest, self.step = name, session, path, manifest, step
        self.settings, self.finished, self.stop_reason = settings, finished, stop_reason


def parse_choice(text: str) -> dict:
    """"#4528 …" forces token id 4528; any other text forces its tokens (successive steps)."""
    text = text.strip("\n")
    head = text.strip().split(" ", 1)[0]
    if head.startswith("#") and head[1:].isdigit():
        return {"token": int(head[1:])}
    if not text:
        raise ValueError("type a token (#id) or some text")
    return {"text": text}


INTERVENTION_HELP = ("zero head L.H · mean head L.H · scale head L.H F · zero neuron L N · clamp neuron L N V · "
                     "steer L P1 P2 S (adds S × (resid_post[P1] − resid_post[P2]) of this run after block L) · "
                     "patch L NAME P PATH (NAME at position P from another trace); "
                     "add `only` for this step only (default: from this step on)")


def predicting_position(trace, step: int) -> int:
    """The token position whose row step `step` computes last (the one that predicts its token)."""
    return trace.prompt_len - 1 + step


def intervention_templates(trace, step: int, layer: int, head: int) -> list[tuple[str, str]]:
    """(label, text) of every kind, filled from the cursor: the dialog's clickable choices."""
    pos = predicting_position(trace, step)
    return [("zero head", f"zero head {layer}.{head}"), ("mean head", f"mean head {layer}.{head}"),
            ("scale head", f"scale head {layer}.{head} 0.5"), ("zero neuron", f"zero neuron {layer} 0"),
            ("clamp neuron", f"clamp neuron {layer} 0 1.0"), ("steer", f"steer {layer} {pos} {max(pos - 1, 0)} 1.0"),
            ("patch", f"patch {layer} hook_resid_post {pos} ")]


def parse_intervention(text: str) -> dict:
    """"zero head 23.4", "scale head 23.4 0.5 only", "clamp neuron 5 123 2.0" -> {"intervene": (kind, args, only)}."""
    parts = text.split(maxsplit=4)
    if parts and parts[0] == "patch":
        return _parse_patch(parts)
    words = text.split()
    only = bool(words) and words[-1] == "only"
    words = words[:-1] if only else words
    try:
        if len(words) >= 3 and words[1] == "head" and words[0] in ("zero", "mean", "scale"):
            layer, head = (int(x) for x in words[2].split("."))
            if words[0] == "scale":
                if len(words) != 4:
                    raise ValueError
                return {"intervene": ("scale_head", (layer, head, float(words[3])), only)}
            if len(words) != 3:
                raise ValueError
            return {"intervene": (f"{words[0]}_head", (layer, head), only)}
        if len(words) >= 4 and words[1] == "neuron" and words[0] in ("zero", "clamp"):
            layer, neuron = int(words[2]), int(words[3])
            if words[0] == "clamp":
                if len(words) != 5:
                    raise ValueError
                return {"intervene": ("clamp_neuron", (layer, neuron, float(words[4])), only)}
            if len(words) != 4:
                raise ValueError
            return {"intervene": ("zero_neuron", (layer, neuron), only)}
        if len(words) == 5 and words[0] == "steer":
            return {"intervene": ("steer", (int(words[1]), int(words[2]), int(words[3]), float(words[4])), only)}
    except ValueError:
        pass
    raise ValueError(f"not an intervention: {INTERVENTION_HELP}")


def _parse_patch(parts: list[str]) -> dict:
    """"patch L NAME P PATH" (at the one step computing position P; PATH may contain spaces)."""
    try:
        if len(parts) == 5:
            return {"intervene": ("patch", (int(parts[1]), parts[2], int(parts[3]), parts[4].strip()), True)}
    except ValueError:
        pass
    raise ValueError("patch L NAME P PATH: e.g. patch 3 hook_resid_post 7 traces/germany")


def _row(trace, name: str, position: int):
    """The row of `name` at token `position` in a trace (numpy), or a one-line refusal (ValueError)."""
    for s in trace.steps:
        a, b = s.positions
        if a <= position < b:
            if name not in s:
                raise ValueError(f"{name} is not recorded at step {s.index}")
            return s[name][position - a]
    raise ValueError(f"no step of this trace computed position {position}")


def check_intervention(trace, step: int, spec: tuple, sources: dict) -> None:
    """(UI thread, numpy) Refuse, in one line (ValueError), a steer or patch this run cannot apply at
    `step`; `sources` caches the other traces loaded (path -> Trace)."""
    kind, args, _ = spec
    if kind == "steer":
        layer, p1, p2, _ = args
        _row(trace, block_name(layer, "hook_resid_post"), p1)
        _row(trace, block_name(layer, "hook_resid_post"), p2)
    elif kind == "patch":
        layer, name, position, path = args
        editable = seam.editable_names()
        if name not in editable:
            raise ValueError(f"cannot patch {name}: editable names are {', '.join(editable)}")
        if path not in sources:
            try:
                sources[path] = load_trace(path)
            except Exception as exc:  # noqa: BLE001 - any unreadable directory: one line in the dialog
                raise ValueError(str(exc).splitlines()[0] if str(exc) else type(exc).__name__) from None
        source = sources[path]
        if source.model.get("name") != trace.model.get("name"):
            theirs, ours = (inert(str(t.model.get("name")), 80) for t in (source, trace))
            raise ValueError(f"{inert(path, 120)} is a trace of {theirs}, not of {ours}")
        at = 0 if position < trace.prompt_len else position - trace.prompt_len + 1
        if at < step:
            raise ValueError(f"position {position} is computed at step {at}, before this branch (step {step}): go to step {at}")
        full = block_name(layer, name)
        row = _row(source, full, position)
        mine = _row(trace, full, min(position, trace.prompt_len - 1))
        if tuple(row.shape) != tuple(mine.shape):
            raise ValueError(f"{full} has shape {list(row.shape)} in {path}, {list(mine.shape)} here")


def default_choice(trace, step: int, rival: int | None) -> str:
    """The prompt's starting value: the Why pane's rival, else the step's runner-up candidate."""
    options = rivals(trace, step)
    tid = rival if rival is not None else (options[0] if options else None)
    if tid is None:
        return ""
    return f"#{tid} {token_texts(trace)(tid)[0]}"


def branch_worker(link, branches, step: int, choice: dict, post: Callable[[Message], object]) -> None:
    """(thread) Make the branch of the current run at `step`, compute its forced step, and `post`
    a `BranchMade` with copies (`link`: the app's LiveLink; `branches`: its BranchSet)."""
    with link.lock:
        if "intervene" in choice:
            spec = choice["intervene"]
            choice = {"interventions": [seam.build_intervention(spec, step, branches.session)]}
        session = branches.branch(step, **choice)
        session.step()
        session.writer.flush()
        manifest = copy.deepcopy(session.writer.manifest)
        link.sent_all(session)
        message = BranchMade(branches.current, session, session.path, manifest, step, session_settings(session),
                             bool(session.finished), session.stop_reason)
    post(message)
