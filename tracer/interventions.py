"""Interventions on a live forward pass, at the hook points where the edited tensors are recorded.

    iv = zero_head(layer=3, head=5, from_step=2)           # z[:, 5] = 0 in block 3 from step 2 on
    with applied(adapter, [iv], step_index=2, start=6):    # hooks in; always removed in a finally
        model(...)                                         # recorded tensors show the edit

Each intervention edits one recorded tensor `blocks.{layer}.{name}` (recorded shape, rows = the
positions the step computes) before anything downstream reads it, so the recorded value is the
edited one and every later tensor is computed from it:
- `attn.hook_z` (head outputs) inside the traced attention function (`attention.Z_EDITS`);
- a module output (`hook_attn_out`, `hook_mlp_out`, `hook_resid_post`) in place, by a forward hook;
- a module input (`hook_resid_pre`: the block's input; `mlp.hook_post`: the down projection's
  input, its only reader) on a copy passed on by a forward pre-hook.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field

import numpy as np
import torch

from .attention import Z_EDITS
from .names import block_name
from .recorder import picked_output

HEAD_KINDS = ("zero_head", "mean_head", "scale_head")
NEURON_KINDS = ("zero_neuron", "clamp_neuron")
# names an intervention may edit -> (module input or output, what may be edited there)
EDITABLE = {
    "attn.hook_z": "attention",
    "mlp.hook_post": "in",
    "hook_resid_pre": "in",
    "hook_attn_out": "out",
    "hook_mlp_out": "out",
    "hook_resid_post": "out",
}


class InterventionError(ValueError):
    """An intervention this model or trace cannot apply (one line for the user)."""


@dataclass
class Intervention:
    """Edit `blocks.{layer}.{name}` at the rows of `positions` (None: every row of the step),
    at step `from_step` only (`only`) or from it onward."""

    kind: str  # zero_head | mean_head | scale_head | zero_neuron | clamp_neuron | steer | patch
    layer: int
    name: str  # block-local recorded name edited
    from_step: int = 0
    only: bool = False
    head: int | None = None
    index: int | None = None  # MLP neuron
    value: float | None = None  # scale factor or clamp value
    vector: np.ndarray | None = field(default=None, repr=False)  # mean z [d_head], steering [d_model], patch row
    positions: list[int] | None = None  # absolute token positions
    source: str = ""  # where `vector` came from, in words
    source_model: str | None = None  # the model of the trace `vector` was read from (must be this one)

    @property
    def tensor(self) -> str:
        return block_name(self.layer, self.name)

    def applies(self, step: int) -> bool:
        return step == self.from_step if self.only else step >= self.from_step

    def describe(self) -> dict:
        """The manifest's record (a vector is summarised by its shape and norm; `source` says where it came from)."""
        out = {"kind": self.kind, "tensor": self.tensor, "from_step": self.from_step, "only_at_step": self.only}
        for key in ("head", "index", "value", "positions"):
            if getattr(self, key) is not None:
                out[key] = getattr(self, key)
        if self.vector is not None:
            out["vector"] = {"shape": list(self.vector.shape), "norm": float(np.linalg.norm(self.vector.astype(np.float64)))}
        if self.source:
            out["source"] = self.source
        return out

    def edit(self, r: torch.Tensor, start: int) -> None:
        """Apply to `r`, the recorded-shape view [T, ...] of rows start..start+T, in place."""
        rows = self._rows(r.shape[0], start, r.device)
        if rows is None:
            return
        vec = None if self.vector is None else torch.as_tensor(self.vector).to(r.device, r.dtype)
        if self.kind in HEAD_KINDS:
            part = r[rows, self.head]  # [n, d_head]
            if self.kind == "zero_head":
                r[rows, self.head] = 0
            elif self.kind == "mean_head":
                assert vec is not None  # a mean_head carries its mean
                r[rows, self.head] = vec  # [d_head] broadcast over rows
            else:
                assert self.value is not None  # a scale_head carries its factor
                r[rows, self.head] = part * self.value
        elif self.kind in NEURON_KINDS:
            value = 0 if self.kind == "zero_neuron" else self.value
            assert value is not None  # a clamp_neuron carries its value
            r[rows, self.index] = value
        elif self.kind == "steer":
            assert vec is not None  # steer and patch carry their vector
            r[rows] += vec  # [d_model] broadcast over rows
        elif self.kind == "patch":
            assert vec is not None
            r[rows] = vec  # one row of the recorded shape
        else:
            raise InterventionError(f"unknown intervention {self.kind!r}")

    def _rows(self, t: int, start: int, device):
        """Row indices of this step to edit (a slice for every row), None when none is here."""
        if self.positions is None:
            return slice(None)
        rows = [p - start for p in self.positions if start <= p < start + t]
        return torch.tensor(rows, dtype=torch.long, device=device) if rows else None


# -- constructors --------------------------------------------------------------------------------
def zero_head(layer: int, head: int, from_step: int = 0, only: bool = False, positions=None) -> Intervention:
    """Head `head` of block `layer` contributes nothing: its z rows set to 0."""
    return Intervention("zero_head", layer, "attn.hook_z", from_step, only, head=head, positions=positions)


def scale_head(layer: int, head: int, factor: float, from_step: int = 0, only: bool = False, positions=None) -> Intervention:
    """Head output multiplied by `factor` (z · factor, so its attn_out part too)."""
    return Intervention("scale_head", layer, "attn.hook_z", from_step, only, head=head, value=float(factor), positions=positions)


def mean_head(layer: int, head: int, trace, step: int = 0, from_step: int = 0, only: bool = False, positions=None) -> Intervention:
    """Head's z rows replaced by its mean over the positions of `trace`'s step `step`
    (default the prefill: the mean over the prompt positions) of the recorded attn.hook_z."""
    name = block_name(layer, "attn.hook_z")
    s = trace.steps[step]
    if name not in s:
        raise InterventionError(f"mean ablation needs {name}, not recorded in step {step} of {trace.path}")
    z = np.asarray(s[name], dtype=np.float64)  # [T, n_heads, d_head]
    a, b = s.positions
    vec = z[:, head].mean(0).astype(np.float32)  # [d_head]
    src = f"mean of {name}[:, {head}] over positions {a}..{b - 1} (step {step} of {trace.path})"
    return Intervention("mean_head", layer, "attn.hook_z", from_step, only, head=head, vector=vec, positions=positions, source=src,
                        source_model=trace.model.get("name"))


def zero_neuron(layer: int, neuron: int, from_step: int = 0, only: bool = False, positions=None) -> Intervention:
    """MLP neuron `neuron` of block `layer` set to 0 (mlp.hook_post, the down projection's input)."""
    return Intervention("zero_neuron", layer, "mlp.hook_post", from_step, only, index=neuron, positions=positions)


def clamp_neuron(layer: int, neuron: int, value: float, from_step: int = 0, only: bool = False, positions=None) -> Intervention:
    """MLP neuron held at `value` (mlp.hook_post)."""
    return Intervention("clamp_neuron", layer, "mlp.hook_post", from_step, only, index=neuron, value=float(value), positions=positions)


def steer(layer: int, vector, name: str = "hook_resid_pre", from_step: int = 0, only: bool = False, positions=None,
          source: str = "") -> Intervention:
    """`vector` [d_model] added to the residual stream entering (hook_resid_pre) or leaving (hook_resid_post) block `layer`."""
    if name not in ("hook_resid_pre", "hook_resid_post"):
        raise InterventionError(f"steering edits hook_resid_pre or hook_resid_post, not {name}")
    vec = np.asarray(vector, dtype=np.float32).reshape(-1)  # [d_model]
    return Intervention("steer", layer, name, from_step, only, vector=vec, positions=positions, source=source)


def row_at(trace, name: str, position: int) -> tuple[np.ndarray, int]:
    """(row of `name` at absolute token `position`, index of the step that computed it) in a trace."""
    for s in trace.steps:
        a, b = s.positions
        if a <= position < b:
            if name not in s:
                raise InterventionError(f"{name} was not recorded in step {s.index} of {trace.path}")
            return np.array(s[name][position - a]), s.index
    raise InterventionError(f"no step of {trace.path} computed position {position}")


def difference(trace_a, trace_b, layer: int, position: int, name: str = "hook_resid_pre") -> tuple[np.ndarray, str]:
    """(a - b, its description): a steering vector from two recorded residuals at a position."""
    full = block_name(layer, name)
    a, _ = row_at(trace_a, full, position)
    b, _ = row_at(trace_b, full, position)
    return (a.astype(np.float32) - b.astype(np.float32)), f"{full}[{position}] of {trace_a.path} minus that of {trace_b.path}"


def patch(layer: int, name: str, position: int, source, prompt_len: int) -> Intervention:
    """Activation patching: `blocks.{layer}.{name}` at token `position` replaced by the row recorded
    there in `source` (another trace of the same model), at the one step that computes it."""
    if name not in EDITABLE:
        raise InterventionError(f"cannot patch {name}: editable names are {', '.join(EDITABLE)}")
    vec, _ = row_at(source, block_name(layer, name), position)
    step = 0 if position < prompt_len else position - prompt_len + 1
    src = f"{block_name(layer, name)}[{position}] of {source.path}"
    return Intervention("patch", layer, name, step, True, vector=vec, positions=[position], source=src,
                        source_model=source.model.get("name"))


# -- installing ----------------------------------------------------------------------------------
def hook_point(adapter, layer: int, name: str):
    """The adapter's hook point recording block-local `name` in block `layer`."""
    layers = adapter.layers()
    if not 0 <= layer < len(layers):
        raise InterventionError(f"layer {layer} is out of range (the model has {len(layers)})")
    if EDITABLE.get(name) is None:
        raise InterventionError(f"cannot intervene on {name}: editable names are {', '.join(EDITABLE)}")
    block = layers[layer]
    if EDITABLE[name] == "attention":
        attn = adapter.attention(block)
        if attn is None or name not in adapter.attention_names.values():
            raise InterventionError(f"{block_name(layer, name)}: this model has no attention head outputs there")
        return attn
    for p in adapter.block_hooks(block):
        if p.name == name and p.where == EDITABLE[name]:
            if name.startswith("hook_resid_") and p.module is not block:
                break  # the block's own input/output only: elsewhere a copy would miss the residual path
            return p
    raise InterventionError(f"{block_name(layer, name)}: this model records it nowhere an intervention can edit")


def _check(iv: Intervention, facts: dict) -> None:
    n_heads, d_mlp = facts.get("n_heads"), facts.get("d_mlp")
    if iv.kind in HEAD_KINDS and not (isinstance(iv.head, int) and 0 <= iv.head < (n_heads or 0)):
        raise InterventionError(f"head {iv.head} is out of range (the model has {n_heads} per layer)")
    if iv.kind in NEURON_KINDS and not (isinstance(iv.index, int) and 0 <= iv.index < (d_mlp or 0)):
        raise InterventionError(f"neuron {iv.index} is out of range (d_mlp = {d_mlp})")
    if iv.source_model is not None and iv.source_model != facts.get("name"):
        raise InterventionError(f"{iv.kind}: its values come from a trace of {iv.source_model}, not of this model")
    vector = iv.vector
    if iv.kind == "patch" and iv.name in ("hook_resid_pre", "hook_resid_post", "hook_attn_out", "hook_mlp_out"):
        if vector is not None and vector.shape != (facts.get("d_model"),):
            raise InterventionError(f"patch: the row has shape {list(vector.shape)}, {iv.name} here [{facts.get('d_model')}]")
    if iv.kind == "steer":
        assert vector is not None  # a steer carries its vector
        if vector.shape != (facts.get("d_model"),):
            raise InterventionError(f"the steering vector has {vector.size} values, the residual stream {facts.get('d_model')}")


def check(adapter, interventions, facts: dict) -> None:
    """Raise InterventionError for one this model cannot apply (before any step runs)."""
    for iv in interventions:
        _check(iv, facts)
        hook_point(adapter, iv.layer, iv.name)


def _view(point, t: torch.Tensor) -> torch.Tensor:
    """The recorded-shape view of a module tensor (edits to it land in `t`)."""
    r = point.transform(t)
    if r.data_ptr() < t.data_ptr() or r.untyped_storage().data_ptr() != t.untyped_storage().data_ptr():
        raise InterventionError(f"{point.name}: the recorded tensor is not a view of the module's, cannot edit it")
    return r


def _out_hook(point, ivs, start):
    def hook(module, args, output):
        t = picked_output(output, point.pick)
        if t is not None:
            r = _view(point, t)
            for iv in ivs:
                iv.edit(r, start)  # in place: the recorder holds a view of this very tensor

    return hook


def _copied_input(point, args, kwargs):
    """(args, kwargs, t): the module's inputs with the one `point` names replaced by its copy `t`."""
    pick = point.pick
    if isinstance(pick, int) and pick < len(args):
        t = args[pick].clone()
        args = (*args[:pick], t, *args[pick + 1 :])
    else:
        key = pick if isinstance(pick, str) else next(iter(kwargs))  # the first keyword argument, as the recorder
        t = kwargs[key].clone()
        kwargs = {**kwargs, key: t}
    return args, kwargs, t


def _in_hook(point, ivs, start):
    def hook(module, args, kwargs):
        args, kwargs, t = _copied_input(point, args, kwargs)
        r = _view(point, t)
        for iv in ivs:
            iv.edit(r, start)  # on a copy: the tensor the caller holds (another block's output) is kept
        return args, kwargs

    return hook


@contextlib.contextmanager
def applied(adapter, interventions, step: int, start: int):
    """Hooks for the interventions that apply at `step` (its rows begin at position `start`);
    yields the sorted names of the tensors they edit; every hook removed in a finally."""
    active = [iv for iv in interventions if iv.applies(step)]
    handles, edited_attn = [], []
    by_target: dict[int, tuple] = {}
    try:
        for iv in active:
            target = hook_point(adapter, iv.layer, iv.name)
            by_target.setdefault(id(target), (target, []))[1].append(iv)
        for target, ivs in by_target.values():
            if isinstance(target, torch.nn.Module):  # an attention module: z inside the traced attention

                def edit_z(z, ivs=ivs):
                    for iv in ivs:
                        iv.edit(z[0], start)  # z [B, T, n_heads, d_v]: rows of the batch of one
                    return z

                Z_EDITS[target] = edit_z
                edited_attn.append(target)
            elif target.where == "out":
                handles.append(target.module.register_forward_hook(_out_hook(target, ivs, start)))
            else:
                handles.append(target.module.register_forward_pre_hook(_in_hook(target, ivs, start), with_kwargs=True))
        yield sorted({iv.tensor for iv in active})
    finally:
        for h in handles:
            h.remove()
        for attn in edited_attn:
            Z_EDITS.pop(attn, None)


@contextlib.contextmanager
def at_points(adapter, name: str, layers, fn):
    """Call `fn(layer, tensor, view)` at the hook point of `blocks.{layer}.{name}` for each of `layers`
    during a forward, batched or not: `tensor` is the module's tensor [B, ...] there (for a module input:
    the copy passed on; for `attn.hook_z`: z [B, T, n_heads, d_v] inside the traced attention) and
    `view(b)` the recorded-shape view [T, ...] of batch row b. Edits made in place land in the forward;
    `fn` may also keep the tensor (e.g. for its gradient). Every hook removed in a finally."""
    handles, edited_attn = [], []
    try:
        for layer in layers:
            point = hook_point(adapter, layer, name)
            if isinstance(point, torch.nn.Module):  # an attention module: z inside the traced attention

                def edit_z(z, layer=layer):
                    fn(layer, z, lambda b: z[b])
                    return z

                Z_EDITS[point] = edit_z
                edited_attn.append(point)
            elif point.where == "out":
                handles.append(point.module.register_forward_hook(_batch_out_hook(point, layer, fn)))
            else:
                handles.append(point.module.register_forward_pre_hook(_batch_in_hook(point, layer, fn), with_kwargs=True))
        yield
    finally:
        for h in handles:
            h.remove()
        for attn in edited_attn:
            Z_EDITS.pop(attn, None)


def _batch_view(point, t: torch.Tensor):
    return lambda b: _view(point, t[b : b + 1])


def _batch_out_hook(point, layer: int, fn):
    def hook(module, args, output):
        t = picked_output(output, point.pick)
        if t is not None:
            fn(layer, t, _batch_view(point, t))  # in place: the output the next module reads

    return hook


def _batch_in_hook(point, layer: int, fn):
    def hook(module, args, kwargs):
        args, kwargs, t = _copied_input(point, args, kwargs)
        fn(layer, t, _batch_view(point, t))  # on a copy: the tensor the caller holds is kept
        return args, kwargs

    return hook
