"""A step's tensors to host numpy arrays: views on the CPU; on CUDA one gather and one copy per step.

On an accelerator every recorded tensor is first gathered on the device into one flat buffer per
dtype (converted to the storage dtype there), then copied with one asynchronous transfer into a
reused pinned host buffer on a side stream, so there is no host sync per tensor and the copy runs
beside the sampler. The returned arrays are views into the pinned buffer: a slot is reused
`SLOTS` steps later, and the session waits for the writer before reusing one it still holds.
"""

from __future__ import annotations

import numpy as np
import torch

SLOTS = 2  # pinned buffers per dtype group, used in turn


def _host_views(flat: torch.Tensor, names: list[str], shapes: list[torch.Size]) -> dict[str, np.ndarray]:
    """Numpy views of consecutive pieces of a flat host tensor."""
    out, offset, data = {}, 0, flat.numpy()
    for name, shape in zip(names, shapes):
        n = shape.numel()
        out[name] = data[offset : offset + n].reshape(tuple(shape))
        offset += n
    return out


class Staged:
    """One step's host arrays, available once its copy has finished (`arrays()` waits for it)."""

    def __init__(self, arrays: dict[str, np.ndarray], event=None):
        self._arrays, self._event = arrays, event

    def arrays(self) -> dict[str, np.ndarray]:
        if self._event is not None:
            self._event.synchronize()  # this step's copy only, not the device's whole queue
            self._event = None
        return self._arrays


class HostStager:
    """Moves each step's tensors to the host; reuses its pinned buffers on CUDA."""

    def __init__(self, device: torch.device, store_dtype: torch.dtype):
        self.device, self.store_dtype = torch.device(device), store_dtype
        self.cuda = self.device.type == "cuda"
        self._stream = torch.cuda.Stream(self.device) if self.cuda else None
        self._buffers: dict[tuple[torch.dtype, int], torch.Tensor] = {}  # (dtype, slot) -> pinned [numel]
        self.steps = 0

    @property
    def slot(self) -> int:
        """The slot the next step uses (the session checks the writer is done with it first)."""
        return self.steps % SLOTS

    def stage(self, tensors: dict[str, torch.Tensor]) -> Staged:
        """Start moving `tensors` to the host; floats become the storage dtype, integers stay integers."""
        self.steps += 1
        if not self.cuda:
            return Staged({k: self._cpu(t) for k, t in tensors.items()})
        return self._stage_cuda(tensors)

    def _cpu(self, t: torch.Tensor) -> np.ndarray:
        """A view when the tensor is already a CPU tensor of the storage dtype (the usual case)."""
        if t.dtype is not self.store_dtype and t.is_floating_point():
            t = t.to(self.store_dtype)
        return (t if t.is_cpu else t.cpu()).numpy()

    def _pinned(self, dtype: torch.dtype, numel: int, slot: int) -> torch.Tensor:
        buf = self._buffers.get((dtype, slot))
        if buf is None or buf.numel() < numel:
            buf = torch.empty(max(numel, int(numel * 1.25)), dtype=dtype, pin_memory=True)  # grows rarely
            self._buffers[dtype, slot] = buf
        return buf[:numel]

    def _stage_cuda(self, tensors: dict[str, torch.Tensor]) -> Staged:
        slot = (self.steps - 1) % SLOTS
        groups: dict[torch.dtype, list[str]] = {}
        for name, t in tensors.items():
            dtype = self.store_dtype if t.is_floating_point() else t.dtype
            groups.setdefault(dtype, []).append(name)
        main = torch.cuda.current_stream(self.device)
        arrays: dict[str, np.ndarray] = {}
        with torch.cuda.stream(self._stream):
            self._stream.wait_stream(main)  # the tensors were produced on the main stream
            for t in tensors.values():
                if t.is_cuda:
                    t.record_stream(self._stream)  # allocated on the main stream, read on this one
            for dtype, names in groups.items():
                flat = torch.cat([tensors[n].to(self.device, dtype).reshape(-1) for n in names])  # [sum numel]: one gather
                host = self._pinned(dtype, flat.numel(), slot)
                host.copy_(flat, non_blocking=True)  # one transfer per dtype group
                flat.record_stream(self._stream)
                arrays.update(_host_views(host, names, [tensors[n].shape for n in names]))
            event = torch.cuda.Event()
            event.record(self._stream)
        return Staged(arrays, event)
