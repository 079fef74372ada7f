"""Collects the recorded tensors of one forward pass through forward wrappers and the traced attention.

    with Recorder(adapter, keep).installed():     # wrappers in; removed in a finally
        model(...)                                # tensors land in recorder.tensors
    tensors = recorder.take()                     # {name: tensor on the model's device}

What to record is decided once, at install: only modules holding a kept name get a wrapper, and
each wrapper serves every hook point of its module in one Python call (no per-call name
filtering). Tensors are kept detached, without a copy (module outputs are fresh tensors that
transformers never modifies in place afterwards; the recomputation tests would catch one that
did); the session converts them to the storage dtype and moves them to the host once per step.

Streaming (a long prefill; tracer/budget.py decides): installed with `streams`, every block but
the last and the final norm get a wrapper too; then, with a `sink`, the recorder hands each
block's tensors to it as soon as the block's forward has returned (the last block's stay until
`take()`, with the head's), norms derived per block, so it never holds more than about one
block's tensors; `held_peak` is the most it held at once then (bytes, each storage counted once;
not counted for steps held whole, where it is the step's size).
With `unembed_rows` the forward ran with logits_to_keep=1 (no [T, vocab] logits in memory) and the
recorder computes the recorded `logits` itself, that many rows at a time, from the final norm's
output (the LM head, then the final soft-cap, as the model does), handing the blocks of rows to
`row_sink`; `last_logits` is the last row, what the sampler reads.

Norms follow TransformerLens: an adapter names a norm module's output `P.hook_normalized`
(P = ln1, ln2, ln_final, ...); the recorder stores the module output as `P.hook_out` and derives
`P.hook_scale` [T, 1] and `P.hook_normalized` = x / scale (LayerNorm: centred first), before the
weight, from the norm's input, batched over the whole step in `take()`.
"""

from __future__ import annotations

import contextlib
import functools
import itertools
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn

from .adapters.base import Adapter, HookPoint, norm_eps, norm_kind
from .adapters.base import rows as base_rows
from .attention import IMPLEMENTATION, RECORDERS, register
from .distributed import ShardGather, shard_width
from .internals import attn_implementation
from .names import NameFilter, block_name

NORMALIZED = ".hook_normalized"


def _first_tensor(value):
    if isinstance(value, torch.Tensor):
        return value
    if isinstance(value, (tuple, list)) and value and isinstance(value[0], torch.Tensor):
        return value[0]
    return getattr(value, "last_hidden_state", None)


def picked_output(output, pick):
    """The output a hook point names: by position in a tuple output, or by attribute (ModelOutput)."""
    if isinstance(pick, str):
        return getattr(output, pick, None)
    if pick == 0:
        return _first_tensor(output)
    return output[pick] if isinstance(output, (tuple, list)) and len(output) > pick else None


def picked_input(args, kwargs, pick):
    """The input a hook point names: a positional argument by index, or a keyword argument by name."""
    if isinstance(pick, str):
        return kwargs.get(pick)
    if pick < len(args):
        return args[pick]
    if pick == 0:
        return _first_tensor(next(iter(kwargs.values()), None))
    return None


def _same_tensor(a: torch.Tensor, b: torch.Tensor) -> bool:
    return a.data_ptr() == b.data_ptr() and a.shape == b.shape and a.stride() == b.stride() and a.dtype == b.dtype


def _detached(t: torch.Tensor) -> torch.Tensor:
    """`t` without autograd history (a no-op under no_grad, where recording usually runs)."""
    return t.detach() if t.requires_grad else t


def norm_names(prefix: str) -> tuple[str, str, str]:
    """(hook_out, hook_normalized, hook_scale) of a norm prefix such as `blocks.3.ln1`."""
    return prefix + ".hook_out", prefix + NORMALIZED, prefix + ".hook_scale"


def normalize(x: torch.Tensor, kind: str, eps: float, with_normalized: bool = True) -> tuple[torch.Tensor | None, torch.Tensor]:
    """TransformerLens's (normalized, scale) of x [..., d] in float32: scale = sqrt(mean(x²) + eps)
    over the last axis (of the centred x for LayerNorm), normalized = x / scale (before the weight;
    None unless `with_normalized`)."""
    x = x.float()
    if kind == "layernorm":
        x = x - x.mean(-1, keepdim=True)
    scale = (x.pow(2).mean(-1, keepdim=True) + eps).sqrt()  # [..., 1]
    return (x / scale if with_normalized else None), scale


class Recorder:
    """Wraps an adapter's modules; `take()` hands over one forward's tensors."""

    def __init__(self, adapter: Adapter, keep: NameFilter | None = None, store_dtype: torch.dtype = torch.float32,
                 lens_rows: bool = False, lazy_result: bool = False, reader_normalized: bool = False):
        """`lens_rows`: also keep each layer's resid_post at the last position (see `take_lens_rows`).
        `lazy_result`: record `attn.hook_o_input` for the reader to compute `attn.hook_result` from
        (with W_O stored once per trace) instead of computing it here (a pass over W_O per step).
        `reader_normalized`: leave out a norm's hook_normalized when its input is recorded under
        another name (see `norm_inputs`); the reader computes it (input / hook_scale)."""
        self.lazy_result = lazy_result
        self.reader_normalized = reader_normalized
        self.norm_inputs: dict[str, tuple[str, str]] = {}  # norm prefix -> (recorded name of its input, kind)
        self.adapter = adapter
        self.keep = keep or NameFilter()
        self.store_dtype = store_dtype
        self.want_lens_rows = lens_rows
        self.tensors: dict[str, torch.Tensor] = {}
        self.lens_rows: dict[int, torch.Tensor] = {}  # layer -> resid_post of the last position [d_model]
        self.layers = adapter.layers()
        self._norm_inputs: list[tuple] = []  # (normalized name, scale name, input, kind, eps, keep normalized, keep scale)
        self._attn_names: dict[int, tuple[tuple[str, str], ...]] = {}  # id(attention module) -> (role, name)
        self._wrapped: list[tuple[nn.Module, Callable[..., Any] | None]] = []  # (module, its own forward attribute)
        self._attn_modules: list = []
        self.active = False
        self.n_heads = getattr(adapter.config, "num_attention_heads", None)  # all query heads (a rank may see fewer)
        self.shards: ShardGather | None = None  # tensor parallelism: sharded tensors are joined on rank 0 (tracer/distributed.py)
        self.streams = False  # set before install(): some steps are streamed (block-end handlers go in)
        self.sink: Callable[[dict[str, torch.Tensor]], None] | None = None  # streaming: takes each block's tensors
        self.row_sink: Callable[[str, int, Any], None] | None = None  # streaming: (name, rows, blocks of rows)
        self.unembed_rows = 0  # > 0: compute `logits` from the final norm's output, this many rows at a time
        self.last_logits: torch.Tensor | None = None  # [vocab], the last row of logits computed here
        self.held_peak = 0  # bytes: the most the recorder held at once while streaming a step
        self._final_hidden: torch.Tensor | None = None  # [T, d_model]: the final norm's output (unembed_rows)

    # -- recording -----------------------------------------------------------------------------
    row_limit: int | None = None  # keep only the last rows of attention maps (recording budget)

    def map_rows(self, module, t: int) -> int:
        """How many of the last query rows of the attention maps of `module` over `t` positions
        this recorder keeps (0: no map is recorded). The traced attention materialises no others."""
        names = self._attn_names.get(id(module))
        if not names or not self.active or not any(role in ("scores", "pattern") for role, _ in names):
            return 0
        return min(t, self.row_limit) if self.row_limit else t

    def attention(self, module, query, key, value, scores, pattern, z) -> None:
        """Called by the traced attention function with the tensors it actually used (the maps:
        at least their last `map_rows` rows, or None when no map is recorded)."""
        names = self._attn_names.get(id(module))
        if not names or not self.active:
            return
        t = query.shape[2]
        maps = {"scores": scores, "pattern": pattern}
        shards = self.shards if query.shape[1] != self.n_heads else None  # this rank's heads (a family may keep them whole)
        for role, name in names:
            if role == "q":
                part = query[0].transpose(0, 1)  # [T, n_heads, d_head]
            elif role == "k":
                part = key[0, :, -t:].transpose(0, 1)  # [T, n_kv_heads, d_head] (new positions)
            elif role == "v":
                part = value[0, :, -t:].transpose(0, 1)  # [T, n_kv_heads, d_head]
            elif role == "z":
                part = z[0]  # [T, n_heads, d_head]
            else:
                part = maps[role][0]  # [n_heads, T, S]
                if self.row_limit and part.shape[1] > self.row_limit:  # budget (tracer/budget.py)
                    part = part[:, -self.row_limit :].clone()  # [n_heads, row_limit, S]; the full map is freed
            if shards is not None:  # joined on rank 0 along the head axis
                shards.defer(name, _detached(part), 0 if role in maps else 1)
            else:
                self.tensors[name] = _detached(part)

    def take(self) -> dict[str, torch.Tensor]:
        """The step's tensors (norm scale/normalized computed here, batched over all norms).
        Under tensor parallelism rank 0 gets the whole step and the other ranks nothing.
        Streaming: what is left goes to the sinks, and take() returns nothing."""
        if self.shards is not None:
            self.tensors.update(self.shards.gather())
            if self.shards.rank:
                self.tensors, self._norm_inputs = {}, []
                return {}
        if self.sink is not None:
            self._finish_stream()
            return {}
        if self._norm_inputs:
            self._derive_norms()
        out, self.tensors = self.tensors, {}
        return out

    def _note_held(self, *more: torch.Tensor) -> None:
        """Raise `held_peak` to the bytes held now: the recorded tensors, the pending norm inputs
        and `more`, each storage once (a view is counted at its own size)."""
        seen: dict[int, int] = {}
        for t in itertools.chain(self.tensors.values(), (item[2] for item in self._norm_inputs), more):
            key = t.untyped_storage().data_ptr()
            seen[key] = max(seen.get(key, 0), t.numel() * t.element_size())
        self.held_peak = max(self.held_peak, sum(seen.values()))

    def _flush(self) -> None:
        """Streaming: the tensors recorded so far, norms derived, go to the sink."""
        self._note_held()
        if self._norm_inputs:
            self._derive_norms()
            self._note_held()
        chunk, self.tensors = self.tensors, {}
        if chunk:
            assert self.sink is not None  # only called while streaming
            self.sink(chunk)

    def _block_done(self, a, k, o) -> None:
        """After a block's forward and its own handlers (every block but the last)."""
        if self.sink is not None:
            self._flush()

    def _final_norm_out(self, a, k, o) -> None:
        if self.unembed_rows:
            t = _first_tensor(o)
            if t is not None:
                self._final_hidden = _detached(t[0])  # [T, d_model]

    def _finish_stream(self) -> None:
        """The last block and the head; then, with unembed_rows, the logits a block of rows at a time."""
        hidden, self._final_hidden = self._final_hidden, None
        if self.unembed_rows and hidden is not None and "logits" in self.tensors:
            del self.tensors["logits"]  # the model's last row only (logits_to_keep=1): every row is computed below
            self._flush()
            assert self.row_sink is not None  # set with unembed_rows
            self.row_sink("logits", hidden.shape[0], self._logit_rows(hidden))
        else:
            self._flush()

    def _logit_rows(self, hidden: torch.Tensor):
        """Blocks of `unembed_rows` rows of lm_head(hidden) (then the final soft-cap), on demand;
        the last row is kept in `last_logits`."""
        head, cap = self.adapter.lm_head(), self.adapter.final_softcap()
        n, rows = hidden.shape[0], self.unembed_rows
        for start in range(0, n, rows):
            block = head(hidden[start : start + rows])  # [rows, vocab]
            if cap is not None:
                block = torch.tanh(block / cap) * cap  # the model's own soft-cap, in its order
            self._note_held(hidden, block)
            if start + rows >= n:
                self.last_logits = block[-1]
            yield block

    def _derive_norms(self) -> None:
        """hook_scale of every norm, batched; hook_normalized only for a norm whose input is not
        itself recorded (the reader computes it as input / scale from `norm_inputs` otherwise)."""
        groups: dict[tuple, list] = {}
        for item in self._norm_inputs:
            x, kind, eps = item[2], item[3], item[4]
            groups.setdefault((kind, eps, x.shape, x.device, x.dtype), []).append(item)
        items_all, self._norm_inputs = self._norm_inputs, []
        recorded = self._recorded_inputs(items_all) if self.reader_normalized else set()  # names the reader computes
        tensors = self.tensors
        for (kind, eps, *_), items in groups.items():
            xs = torch.stack([item[2] for item in items])  # [n_norms, T, d_model]
            wanted = any(item[5] and item[0] not in recorded for item in items)  # a hook_normalized to store here
            normalized, scale = normalize(xs, kind, eps, wanted)  # [n_norms, T, d_model] or None, [n_norms, T, 1]
            rows = normalized.unbind(0) if normalized is not None else [None] * len(items)
            for (n_name, s_name, _, _, _, keep_normalized, keep_scale), n_row, s_row in zip(items, rows, scale.unbind(0)):
                if keep_normalized and n_name not in recorded:
                    assert n_row is not None  # `wanted`: normalize computed the rows
                    tensors[n_name] = n_row
                if keep_scale or n_name in recorded:
                    tensors[s_name] = s_row

    def _recorded_inputs(self, items: list) -> set[str]:
        """hook_normalized names whose norm input is exactly a tensor recorded under another name
        (the same memory, shape and strides: ln1's input is the block's hook_resid_pre), learned
        on the first step and checked on every step; `norm_inputs` maps their prefixes."""
        tensors, out, index = self.tensors, set(), None
        for n_name, _, x, kind, _, keep_n, _ in items:
            if not keep_n:
                continue
            prefix = n_name[: -len(NORMALIZED)]
            known = self.norm_inputs.get(prefix)
            if known is None:  # learned once (a trace has one mapping), then checked on every step
                if index is None:
                    index = {}
                    for name, t in tensors.items():  # the latest name wins: ln1's input is resid_pre, not hook_embed
                        index[t.data_ptr(), t.shape, t.stride(), t.dtype] = name
                found = index.get((x.data_ptr(), x.shape, x.stride(), x.dtype))
                if found is None or found.endswith(NORMALIZED):
                    continue
                known = self.norm_inputs[prefix] = (found, kind)
            source = tensors.get(known[0])
            if source is not None and _same_tensor(source, x):
                out.add(n_name)  # else this step stores hook_normalized itself
        return out

    def take_lens_rows(self) -> torch.Tensor:
        """[n_layers, d_model]: each layer's resid_post at the last position of the step."""
        rows = [self.lens_rows[i] for i in range(len(self.layers))]
        self.lens_rows.clear()  # in place: the wrappers hold this dict
        return torch.stack(rows)

    # -- wrappers ------------------------------------------------------------------------------
    def _handler(self, point: HookPoint, name: str, lens_layer: int | None, kept_as: str | None = None):
        """A function (args, kwargs, output) -> None recording one hook point, or None when nothing is kept.
        `kept_as`: the name whose keep pattern decides (attn.hook_o_input is kept for attn.hook_result)."""
        transform, pick = point.transform, point.pick
        get = (lambda a, k, o: picked_input(a, k, pick)) if point.where == "in" else (lambda a, k, o: picked_output(o, pick))
        if point.where == "out" and name.endswith(NORMALIZED):
            return self._norm_handler(point, name[: -len(NORMALIZED)], get)
        keep = self.keep(kept_as or name)
        if lens_layer is not None and self.want_lens_rows:
            rows = self.lens_rows

            def with_lens(a, k, o):
                t = get(a, k, o)
                if t is not None:
                    rows[lens_layer] = _detached(t[0, -1])
                    if keep:
                        self.tensors[name] = _detached(transform(t))

            return with_lens
        if not keep:
            return None
        if self.shards is not None and point.heads_of is not None and shard_width(point.heads_of, "out") is not None:
            return self._head_shard_handler(name, get, transform)
        width = shard_width(point.module, point.where) if self.shards is not None else None
        if width is not None:
            return self._shard_handler(name, get, transform, width, synchronous=name == kept_as)
        if transform is base_rows and pick == 0:  # the common case: [1, T, X] -> [T, X], fewest calls
            Tensor = torch.Tensor
            if point.where == "out":

                def record_first_output(a, k, o):
                    t = o if type(o) is Tensor else _first_tensor(o)
                    if t is not None:
                        self.tensors[name] = _detached(t[0])

                return record_first_output

            def record_first_input(a, k, o):
                t = a[0] if a and type(a[0]) is Tensor else picked_input(a, k, 0)
                if t is not None:
                    self.tensors[name] = _detached(t[0])

            return record_first_input

        def record(a, k, o):
            t = get(a, k, o)
            if t is not None:
                self.tensors[name] = _detached(transform(t))

        return record

    def _shard_handler(self, name: str, get, transform, width: int, synchronous: bool):
        """A handler for a tensor that may hold this rank's slice of its last axis (`width` wide):
        deferred to the step's gather, or, for a transform that reads sharded weights
        (attn.hook_result), joined at once on every rank."""
        shards = self.shards

        def record(a, k, o):
            t = get(a, k, o)
            if t is None:
                return
            if t.shape[-1] != width:  # whole (a gathered output)
                if synchronous or not shards.rank:
                    self.tensors[name] = _detached(transform(t))
            elif synchronous:
                full = transform(shards.join_now(_detached(t), -1))
                if not shards.rank:
                    self.tensors[name] = full
            else:
                shards.defer(name, _detached(t), -1, transform)

        return record

    def _head_shard_handler(self, name: str, get, transform):
        """A handler for a per-head tensor holding this rank's heads (HookPoint.heads_of is split):
        transformed here ([T, heads, d_head]), joined along the head axis in the step's gather."""
        shards = self.shards

        def record(a, k, o):
            t = get(a, k, o)
            if t is not None:
                shards.defer(name, _detached(transform(t)), 1)

        return record

    def _norm_handler(self, point: HookPoint, prefix: str, get_out):
        out_name, n_name, s_name = norm_names(prefix)
        keep_out, keep_n, keep_s = self.keep(out_name), self.keep(n_name), self.keep(s_name)
        eps = norm_eps(point.module)
        if eps is None:  # cannot derive TransformerLens's scale without the module's epsilon
            keep_n = keep_s = False
        if not (keep_out or keep_n or keep_s):
            return None
        kind, transform = norm_kind(point.module, self.adapter.norm), point.transform

        def record(a, k, o):
            if keep_out:
                t = get_out(a, k, o)
                if t is not None:
                    self.tensors[out_name] = _detached(transform(t))
            if keep_n or keep_s:
                x = picked_input(a, k, 0)
                if x is not None:
                    self._norm_inputs.append((n_name, s_name, _detached(transform(x)), kind, eps, keep_n, keep_s))

        return record

    def _wrap(self, module: nn.Module, handlers: Sequence) -> None:
        """Replace the module's forward (instance attribute) by one that runs the handlers after it."""
        previous = module.__dict__.get("forward")
        inner = module.forward
        handlers = tuple(handlers)

        @functools.wraps(inner)
        def forward(*args, **kwargs):
            out = inner(*args, **kwargs)
            if self.active:
                for h in handlers:
                    h(args, kwargs, out)
            return out

        module.forward = forward
        self._wrapped.append((module, previous))

    def _points(self):
        """(hook point, full name, lens layer or None, name deciding keep) for every hook point of the adapter."""
        for point in self.adapter.head_hooks():
            yield point, point.name, None, None
        for i, layer in enumerate(self.layers):
            for point in self.adapter.block_hooks(layer):
                yield point, block_name(i, point.name), (i if point.name == "hook_resid_post" else None), None
            result = self.adapter.result_hook(layer, lazy=self.lazy_result)  # last position only
            if result is not None:
                yield result, block_name(i, result.name), None, block_name(i, "attn.hook_result")

    def install(self) -> None:
        """Wrap the modules holding kept names and attach to the attention modules (idempotent).
        They record only while `capturing()`; `remove()` takes them out again."""
        if self._wrapped or self._attn_modules:
            return
        register()
        try:
            by_module: dict[int, tuple[nn.Module, list]] = {}
            for point, name, lens_layer, kept_as in self._points():
                handler = self._handler(point, name, lens_layer, kept_as)
                if handler is not None:
                    by_module.setdefault(id(point.module), (point.module, []))[1].append(handler)
            if self.streams:
                for layer in self.layers[:-1]:  # each block's tensors leave when it returns
                    by_module.setdefault(id(layer), (layer, []))[1].append(self._block_done)
                norm = self.adapter.final_norm() if self.keep("logits") else None
                if norm is not None:  # its output, for logits computed here (unembed_rows)
                    by_module.setdefault(id(norm), (norm, []))[1].append(self._final_norm_out)
            for module, handlers in by_module.values():
                self._wrap(module, handlers)
            roles = self.adapter.attention_names
            for i, layer in enumerate(self.layers):
                attn = self.adapter.attention(layer)
                if attn is None:  # generic fallback: no attention module found, nothing to record there
                    continue
                names = tuple((role, block_name(i, local)) for role, local in roles.items() if self.keep(block_name(i, local)))
                if names:
                    RECORDERS[attn] = self
                    self._attn_names[id(attn)] = names
                    self._attn_modules.append(attn)
        except BaseException:
            self.remove()
            raise

    def remove(self) -> None:
        """Restore every wrapped forward and detach from the attention modules."""
        for module, previous in reversed(self._wrapped):
            if previous is None:
                module.__dict__.pop("forward", None)
            else:
                module.forward = previous
        for attn in self._attn_modules:
            RECORDERS.pop(attn, None)
        self._wrapped, self._attn_modules = [], []
        self._attn_names.clear()

    @contextlib.contextmanager
    def capturing(self):
        """Record what the installed wrappers see during the block (one forward pass)."""
        self.active = True
        try:
            yield self
        finally:
            self.active = False

    @contextlib.contextmanager
    def installed(self):
        """Wrappers and the traced attention in place for the duration; always removed."""
        model = self.adapter.model
        previous = attn_implementation(model)
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
