"""Collects the recorded tensors of one forward pass through hooks and the traced attention.

    with Recorder(adapter, keep).installed():     # hooks in; removed in a finally
        model(...)                                # tensors land in recorder.tensors
    tensors = recorder.take()                     # {name: tensor on the model's device}

Tensors are kept detached, without a copy; the session converts them to the storage dtype and
moves them to the host once per step.
"""

from __future__ import annotations

import contextlib

import torch

from .adapters import Adapter, HookPoint
from .attention import IMPLEMENTATION, register
from .names import NameFilter, block_name


def _first_tensor(value):
    if isinstance(value, torch.Tensor):
        return value
    if isinstance(value, (tuple, list)) and value and isinstance(value[0], torch.Tensor):
        return value[0]
    return getattr(value, "last_hidden_state", None)


def _picked_output(output, pick):
    """The output a hook point names: by position in a tuple output, or by attribute (ModelOutput)."""
    if isinstance(pick, str):
        return getattr(output, pick, None)
    if pick == 0:
        return _first_tensor(output)
    return output[pick] if isinstance(output, (tuple, list)) and len(output) > pick else None


def _picked_input(args, kwargs, pick):
    """The input a hook point names: a positional argument by index, or a keyword argument by name."""
    if isinstance(pick, str):
        return kwargs.get(pick)
    if pick < len(args):
        return args[pick]
    if pick == 0:
        return _first_tensor(next(iter(kwargs.values()), None))
    return None


class Recorder:
    """Hooks an adapter's model; `take()` hands over one forward's tensors."""

    def __init__(self, adapter: Adapter, keep: NameFilter | None = None, store_dtype: torch.dtype = torch.float32):
        self.adapter = adapter
        self.keep = keep or NameFilter()
        self.store_dtype = store_dtype
        self.tensors: dict[str, torch.Tensor] = {}
        self.lens_rows: dict[int, torch.Tensor] = {}  # layer -> resid_post of the last position [d_model]
        self.layers = adapter.layers()
        self._attn_layer: dict[int, int] = {}
        self._handles: list = []
        self._attn_modules: list = []
        self.active = False

    # -- recording -----------------------------------------------------------------------------
    def store(self, name: str, t: torch.Tensor) -> None:
        """Keep `t` (detached, no copy: module outputs are fresh tensors that transformers never
        modifies in place afterwards; the recomputation tests would catch one that did).
        Conversion to the storage dtype happens once per step in the session."""
        if self.keep(name):
            self.tensors[name] = t.detach()

    row_limit: int | None = None  # keep only the last rows of attention maps (recording budget)

    def attention(self, module, query, key, value, scores, pattern, z) -> None:
        """Called by the traced attention function with the tensors it actually used."""
        layer = self._attn_layer.get(id(module))
        if layer is None or not self.active:
            return
        names = self.adapter.attention_names
        t = query.shape[2]
        parts = {
            "q": query[0].transpose(0, 1),  # [T, n_heads, d_head]
            "k": key[0, :, -t:].transpose(0, 1),  # [T, n_kv_heads, d_head] (new positions)
            "v": value[0, :, -t:].transpose(0, 1),  # [T, n_kv_heads, d_head]
            "scores": scores[0],  # [n_heads, T, S]
            "pattern": pattern[0],  # [n_heads, T, S]
            "z": z[0],  # [T, n_heads, d_head]
        }
        if self.row_limit and t > self.row_limit:  # budget (tracer/budget.py): the full maps are freed
            for role in ("scores", "pattern"):
                parts[role] = parts[role][:, -self.row_limit :].clone()  # [n_heads, row_limit, S]
        for role, local in names.items():
            self.store(block_name(layer, local), parts[role])

    def take(self) -> dict[str, torch.Tensor]:
        out, self.tensors = self.tensors, {}
        return out

    def take_lens_rows(self) -> torch.Tensor:
        """[n_layers, d_model]: each layer's resid_post at the last position of the step."""
        rows = [self.lens_rows[i] for i in range(len(self.layers))]
        self.lens_rows = {}
        return torch.stack(rows)

    # -- hooks ---------------------------------------------------------------------------------
    def _hook(self, point: HookPoint, name: str, lens_layer: int | None):
        transform = point.transform

        def on_tensor(t):
            if t is None or not self.active:
                return
            if lens_layer is not None:
                self.lens_rows[lens_layer] = t[0, -1].detach()
            if self.keep(name):
                self.store(name, transform(t))

        pick = point.pick
        if point.where == "in":

            def pre_hook(module, args, kwargs):
                on_tensor(_picked_input(args, kwargs, pick))

            return point.module.register_forward_pre_hook(pre_hook, with_kwargs=True)

        def hook(module, args, output):
            on_tensor(_picked_output(output, pick))

        return point.module.register_forward_hook(hook)

    def install(self) -> None:
        """Register the hooks and attach to the attention modules (idempotent). They record only
        while `capturing()`; `remove()` takes them out again."""
        if self._handles:
            return
        register()
        try:
            for point in self.adapter.head_hooks():
                self._handles.append(self._hook(point, point.name, None))
            for i, layer in enumerate(self.layers):
                for point in self.adapter.block_hooks(layer):
                    lens = i if point.name == "hook_resid_post" else None
                    self._handles.append(self._hook(point, block_name(i, point.name), lens))
                attn = self.adapter.attention(layer)
                if attn is None:  # generic fallback: no attention module found, nothing to record there
                    continue
                attn._stepscope_recorder = self
                self._attn_layer[id(attn)] = i
                self._attn_modules.append(attn)
        except BaseException:
            self.remove()
            raise

    def remove(self) -> None:
        """Take every hook out and detach from the attention modules."""
        for h in self._handles:
            h.remove()
        for attn in self._attn_modules:
            attn.__dict__.pop("_stepscope_recorder", None)
        self._handles, self._attn_modules = [], []
        self._attn_layer.clear()

    @contextlib.contextmanager
    def capturing(self):
        """Record what the installed hooks see during the block (one forward pass)."""
        self.active = True
        try:
            yield self
        finally:
            self.active = False

    @contextlib.contextmanager
    def installed(self):
        """Hooks and the traced attention in place for the duration; always removed."""
        model = self.adapter.model
        previous = model.config._attn_implementation
        try:
            register()
            if previous != IMPLEMENTATION:
                model.set_attn_implementation(IMPLEMENTATION)
            self.install()
            with self.capturing():
                yield self
        finally:
            self.remove()
            if previous != IMPLEMENTATION and previous is not None:
                model.set_attn_implementation(previous)
