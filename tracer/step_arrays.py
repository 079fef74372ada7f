"""One step's host arrays, most of them laid end to end in one flat buffer.

The session's stager gathers a step's float tensors into one flat host array; `StepArrays` names
the pieces (`spans`: byte ranges, `shapes`) without making ~700 numpy views that nobody reads:
the writer checksums and writes slices of the buffer directly, and a view is made only when
someone asks for an array. Arrays added afterwards (integers, sampling, the lens) are kept as
they are (`extra`). It is a mutable mapping name -> numpy array like the plain dicts the writer
also accepts.
"""

from __future__ import annotations

from collections.abc import MutableMapping

import numpy as np


class StepArrays(MutableMapping):
    """name -> array; `flat` names first (in buffer order), then `extra` in insertion order."""

    def __init__(self, flat: np.ndarray | None = None, names=(), shapes=()):
        """`flat`: a 1-D array holding, end to end, the arrays `names` with `shapes` (C order)."""
        self.flat = flat
        # (numpy's stubs give ndarray the buffer protocol only from Python 3.12)
        self.flat_bytes = memoryview(flat).cast("B") if flat is not None else None  # type: ignore[arg-type]
        self.spans: dict[str, tuple[int, int]] = {}  # name -> (start, end) bytes in flat
        self.shapes: dict[str, tuple[int, ...]] = {}
        self.extra: dict[str, np.ndarray] = {}
        self._views: dict[str, np.ndarray] = {}
        offset, size = 0, flat.itemsize if flat is not None else 0
        for name, shape in zip(names, shapes):
            n = shape.numel() if hasattr(shape, "numel") else int(np.prod(shape, dtype=np.int64))  # torch.Size or tuple
            end = offset + n * size
            self.spans[name], self.shapes[name] = (offset, end), tuple(shape)
            offset = end

    def view(self, name: str) -> np.ndarray:
        """The numpy view of a flat array (made once)."""
        arr = self._views.get(name)
        if arr is None:
            start, end = self.spans[name]
            assert self.flat is not None  # spans are only set with a flat buffer
            size = self.flat.itemsize
            arr = self._views[name] = self.flat[start // size : end // size].reshape(self.shapes[name])
        return arr

    def __getitem__(self, name: str) -> np.ndarray:
        if name in self.extra:
            return self.extra[name]
        if name in self.spans:
            return self.view(name)
        raise KeyError(name)

    def __setitem__(self, name: str, value: np.ndarray) -> None:
        if name in self.spans:  # replaced: it leaves the buffer
            del self.spans[name], self.shapes[name]
            self._views.pop(name, None)
        self.extra[name] = value

    def __delitem__(self, name: str) -> None:
        if name in self.spans:
            del self.spans[name], self.shapes[name]
            self._views.pop(name, None)
        else:
            del self.extra[name]

    def __iter__(self):
        yield from self.spans
        yield from self.extra

    def __len__(self) -> int:
        return len(self.spans) + len(self.extra)

    def __contains__(self, name: object) -> bool:
        return name in self.spans or name in self.extra
