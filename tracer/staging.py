"""A step's tensors to host numpy arrays through one flat buffer per step (CPU and CUDA alike).

Every recorded float tensor is gathered, in the storage dtype, into one flat buffer: the other
names first, then the attention scores (where masked keys are -inf by design). The NaN/inf scan
is then two reductions over that buffer instead of one per tensor, and the arrays handed to the
writer are views into it. On the CPU the buffer is a fresh host tensor (one `torch.cat`). On an
accelerator the gather happens on the device and the buffer is copied with one asynchronous
transfer into a reused pinned host buffer on a side stream, so there is no host sync per tensor
and the copy runs beside the sampler; a pinned slot is reused `SLOTS` steps later, and the
session waits for the writer before reusing one it still holds. Integer tensors (rare) travel
as they are. A CPU step bigger than FLAT_MAX (a long prefill) is not copied again: its arrays
are views of the tensors, scanned one by one, so memory holds it once.
"""

from __future__ import annotations

from collections.abc import MutableMapping

import numpy as np
import torch

from .budget import is_attention_map
from .internals import flatten_dense_tensors, foreach_copy
from .step_arrays import StepArrays
from .trace_format import BF16

SLOTS = 2  # pinned buffers per dtype group, used in turn
FLAT_MAX = 64 << 20  # a CPU step bigger than this is handed over as views (no flat copy)
SCORES = "hook_attn_scores"  # names ending so may hold -inf (masked keys); NaN and +inf still count


def host_array(t: torch.Tensor) -> np.ndarray:
    """The numpy array of a host tensor, sharing its memory: a bfloat16 tensor's bits as the trace
    format's BF16 stand-in (numpy has no bfloat16; the writer stores them as safetensors "BF16")."""
    if t.dtype == torch.bfloat16:
        return t.view(torch.int16).numpy().view(BF16)
    return t.numpy()


def _host_views(flat: np.ndarray, names: list[str], shapes: list[torch.Size]) -> dict[str, np.ndarray]:
    """Numpy views of consecutive pieces of a flat host array."""
    out, offset = {}, 0
    for name, shape in zip(names, shapes):
        n = shape.numel()
        out[name] = flat[offset : offset + n].reshape(shape)
        offset += n
    return out


def _scan(flat: torch.Tensor, n_other: int) -> bool:
    """True when the flat buffer holds no NaN/inf (the scores part, from n_other on: no NaN/+inf).
    One min/max pass per part (NaN propagates through both)."""
    if n_other:
        lo, hi = torch.aminmax(flat[:n_other])
        if not bool(torch.isfinite(lo) & torch.isfinite(hi)):
            return False
    if flat.numel() > n_other:
        top = torch.aminmax(flat[n_other:]).max
        return not bool(torch.isnan(top) | (top == float("inf")))
    return True


def nonfinite(tensors: dict[str, torch.Tensor]) -> list[str]:
    """Names holding NaN or inf (masked scores are -inf by design: only NaN/+inf count there)."""
    bad = []
    for name, t in tensors.items():
        if not t.is_floating_point() or not t.numel():
            continue
        if name.endswith(SCORES):
            if bool(torch.isnan(t).any() | (t == float("inf")).any()):
                bad.append(name)
        elif not bool(torch.isfinite(t).all()):
            bad.append(name)
    return bad


class Staged:
    """One step's host arrays, available once its copy has finished (`arrays()` waits for it)."""

    def __init__(self, arrays: MutableMapping[str, np.ndarray], nonfinite: list[str], event=None):
        self._arrays, self._event = arrays, event
        self.nonfinite = nonfinite  # names holding NaN/inf, from the scan before the copy

    def arrays(self) -> MutableMapping[str, np.ndarray]:
        if self._event is not None:
            self._event.synchronize()  # this step's copy only, not the device's whole queue
            self._event = None
        return self._arrays


class HostStager:
    """Moves each step's tensors to the host through buffers it reuses: SLOTS host buffers on the
    CPU, SLOTS pinned ones on CUDA. A step's arrays stay valid until the step SLOTS later is staged
    (the session makes a background writer finish a step before its slot comes round again)."""

    def __init__(self, device: torch.device, store_dtype: torch.dtype):
        self.device, self.store_dtype = torch.device(device), store_dtype
        self.cuda = self.device.type == "cuda"
        self._stream = torch.cuda.Stream(self.device) if self.cuda else None
        self._buffers: dict[tuple[torch.dtype, int], torch.Tensor] = {}  # (dtype, slot) -> pinned [numel]
        self._layouts: dict[tuple, tuple] = {}  # names in arrival order -> (float names, n_other, int names, n_fixed)
        self._cpu_slots: list[tuple | None] = [None] * SLOTS  # (names, fixed shapes, buffer, fixed views, fixed numel)
        self.steps = 0

    @property
    def slot(self) -> int:
        """The slot the next step uses (the session checks the writer is done with it first)."""
        return self.steps % SLOTS

    def _layout(self, tensors: dict[str, torch.Tensor]) -> tuple[list[str], int, list[str], int]:
        """(float names: attention maps last, scores the very last; how many are not scores; integer
        names; how many are not maps), decided once per set of names (a decode step records the
        same names every time)."""
        key = tuple(tensors)
        layout = self._layouts.get(key)
        if layout is None:
            floats = [n for n in key if tensors[n].is_floating_point()]
            fixed = [n for n in floats if not is_attention_map(n)]
            patterns = [n for n in floats if is_attention_map(n) and not n.endswith(SCORES)]
            scores = [n for n in floats if n.endswith(SCORES)]
            # maps last: a decode step's maps grow by a key each step, everything before them keeps its offset
            layout = (fixed + patterns + scores, len(fixed) + len(patterns), [n for n in key if not tensors[n].is_floating_point()], len(fixed))
            if len(self._layouts) > 16:
                self._layouts.clear()
            self._layouts[key] = layout
        return layout

    def stage(self, tensors: dict[str, torch.Tensor]) -> Staged:
        """Start moving `tensors` to the host; floats become the storage dtype, integers stay integers."""
        self.steps += 1
        if not self.cuda and sum(t.numel() * t.element_size() for t in tensors.values()) > FLAT_MAX:
            return self.host(tensors)  # a long prefill: no second copy of it in memory
        names, n_other, ints, n_fixed = self._layout(tensors)
        if not self.cuda:
            flat, n_other_numel, shapes = self._gather_cpu(tensors, names, n_fixed, n_other)
            bad = [] if flat is None or _scan(flat, n_other_numel) else nonfinite({n: tensors[n] for n in names})
            arrays = StepArrays(host_array(flat), names, shapes) if flat is not None else StepArrays()
            arrays.update({n: tensors[n].cpu().numpy() for n in ints})
            return Staged(arrays, bad)
        flat, n_other_numel = self._gather(tensors, names, n_other)  # [sum numel] on the device
        bad = [] if flat is None or _scan(flat, n_other_numel) else nonfinite({n: tensors[n] for n in names})
        return self._copy_cuda(tensors, names, flat, ints, bad)

    def _gather_cpu(self, tensors, names, n_fixed, n_other):
        """(flat [sum numel] in the storage dtype, numel before the scores, shapes): the float
        tensors copied by one `_foreach_copy_` into views of a reused host buffer (SLOTS of them,
        used in turn). The views of everything before the attention maps are made once per layout;
        only the maps' (which grow a key per decode step) are made per step."""
        if not names:
            return None, 0, []
        srcs = [tensors[n] for n in names]
        shapes = [t.shape for t in srcs]
        numels = [shape.numel() for shape in shapes]
        total = sum(numels)
        index = (self.steps - 1) % SLOTS
        slot = self._cpu_slots[index]
        if slot is None or slot[0] is not names or slot[1] != shapes[:n_fixed] or slot[2].numel() < total:
            buf = torch.empty(int(total * 1.25) + 4096, dtype=self.store_dtype)  # room for the maps to grow
            views, offset = [], 0
            for shape, n in zip(shapes[:n_fixed], numels[:n_fixed]):
                views.append(buf[offset : offset + n].view(shape))
                offset += n
            slot = self._cpu_slots[index] = (names, shapes[:n_fixed], buf, views, offset)
        _, _, buf, views, offset = slot
        maps = []
        for shape, n in zip(shapes[n_fixed:], numels[n_fixed:]):
            maps.append(buf[offset : offset + n].view(shape))
            offset += n
        foreach_copy(views + maps, srcs)  # one call for every tensor; converts dtypes
        return buf[:total], sum(numels[:n_other]), shapes

    def host(self, tensors: dict[str, torch.Tensor]) -> Staged:
        """Host arrays that are views of the CPU tensors (converted only where the storage dtype
        differs; copied from an accelerator, synchronously), scanned tensor by tensor: for steps
        too big to copy once more, and for the pieces of a step streamed to disk."""
        bad = []
        arrays = {}
        for name, t in tensors.items():
            if t.is_floating_point():
                if t.numel() and not _scan(t.reshape(-1), 0 if name.endswith(SCORES) else t.numel()):
                    bad.append(name)
                if t.dtype != self.store_dtype:
                    t = t.to(self.store_dtype)
            arrays[name] = host_array(t.cpu())
        return Staged(arrays, bad)

    def _gather(self, tensors, names, n_other) -> tuple[torch.Tensor | None, int]:
        """One flat buffer of the float tensors in the storage dtype, and the numel before the scores."""
        if not names:
            return None, 0
        pieces = [tensors[n] for n in names]
        n_other_numel = sum(p.numel() for p in pieces[:n_other]) if n_other < len(pieces) else -1
        if len({p.dtype for p in pieces}) == 1:
            flat = flatten_dense_tensors(pieces)  # [sum numel]: flatten and concatenate in one call; a copy
            if len(pieces) == 1:
                flat = flat.clone()  # one tensor "flattens" to a view of itself: the host arrays never alias the model's
        else:
            flat = torch.cat([p.reshape(-1).to(self.store_dtype) for p in pieces])
        if flat.dtype != self.store_dtype:
            flat = flat.to(self.store_dtype)
        return flat, (flat.numel() if n_other_numel < 0 else n_other_numel)

    def _pinned(self, dtype: torch.dtype, numel: int, slot: int) -> torch.Tensor:
        buf = self._buffers.get((dtype, slot))
        if buf is None or buf.numel() < numel:
            buf = torch.empty(max(numel, int(numel * 1.25)), dtype=dtype, pin_memory=True)  # grows rarely
            self._buffers[dtype, slot] = buf
        return buf[:numel]

    def _copy_cuda(self, tensors, names, flat, ints, bad) -> Staged:
        slot = (self.steps - 1) % SLOTS
        main = torch.cuda.current_stream(self.device)
        arrays = StepArrays()
        groups = [(flat, names)] if flat is not None else []
        by_dtype: dict[torch.dtype, list[str]] = {}
        for n in ints:
            by_dtype.setdefault(tensors[n].dtype, []).append(n)
        assert self._stream is not None  # made for a CUDA device
        with torch.cuda.stream(self._stream):
            self._stream.wait_stream(main)  # the tensors were produced on the main stream
            if flat is not None:
                flat.record_stream(self._stream)
            for n in ints:
                if tensors[n].is_cuda:
                    tensors[n].record_stream(self._stream)
            groups += [(torch.cat([tensors[n].to(self.device).reshape(-1) for n in group]), group) for group in by_dtype.values()]
            for i, (data, group) in enumerate(groups):
                host = self._pinned(data.dtype, data.numel(), slot)
                host.copy_(data, non_blocking=True)  # one transfer per dtype group
                data.record_stream(self._stream)
                shapes = [tensors[n].shape for n in group]
                if i == 0 and flat is not None:  # the floats: the writer's flat buffer
                    arrays = StepArrays(host_array(host), group, shapes)
                else:  # integer groups: plain arrays
                    arrays.update(_host_views(host.numpy(), group, shapes))
            event = torch.cuda.Event()
            event.record(self._stream)
        return Staged(arrays, bad, event)
