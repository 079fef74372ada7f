"""Writing a new file's bytes past the page cache (O_DIRECT), through a reused aligned buffer.

Why: a trace writes hundreds of MB per run (5 MiB per generated SmolLM2 token). Buffered writes
put every byte into fresh page-cache pages, which the kernel must allocate, track and later
write back on the same CPUs as the model's forward; on the 2-core benchmark VM that costs about
2 ms per MB, O_DIRECT about 0.6 ms per MB, mostly waiting for the device rather than computing.
The bytes go from one reused page-aligned staging buffer (per thread, 8 MiB) to the device in
aligned pwrite calls; the last block is padded and the file is then truncated to its true size.

`write_direct` returns False, having written nothing, where the filesystem refuses O_DIRECT
(tmpfs on older kernels, some FUSE and network filesystems): the caller then writes normally.
"""

from __future__ import annotations

import errno
import mmap
import os
import threading

import numpy as np

ALIGN = 4096  # covers 512-byte and 4 KiB logical blocks
CHUNK = 8 << 20  # staging buffer size (a multiple of ALIGN)
_REFUSED = {errno.EINVAL, errno.EOPNOTSUPP, errno.ENOTSUP, errno.ENOSYS}
_local = threading.local()  # each writing thread has its own staging buffer


def _buffer() -> mmap.mmap:
    buf = getattr(_local, "buf", None)
    if buf is None:
        buf = _local.buf = mmap.mmap(-1, CHUNK)  # anonymous: page aligned
    return buf


def contiguous_pieces(a: np.ndarray):
    """The bytes of `a` in C order as memoryviews: one view when contiguous, else copies of
    blocks of its leading axis (at most about CHUNK bytes each, so no full-size temporary)."""
    if a.flags.c_contiguous:
        yield memoryview(a.reshape(-1)).cast("B")  # type: ignore[arg-type]  # numpy stubs: ndarray is a Buffer only on 3.12+
        return
    if a.ndim < 2:
        yield memoryview(np.ascontiguousarray(a).reshape(-1)).cast("B")  # type: ignore[arg-type]  # numpy stubs: ndarray is a Buffer only on 3.12+
        return
    row = max(1, a[0].nbytes)
    step = max(1, CHUNK // row)
    for i in range(0, a.shape[0], step):
        yield memoryview(np.ascontiguousarray(a[i : i + step]).reshape(-1)).cast("B")  # type: ignore[arg-type]  # numpy stubs: ndarray is a Buffer only on 3.12+


class _Stream:
    """Copies byte pieces into the staging buffer and writes each full buffer at the next aligned offset."""

    def __init__(self, fd: int):
        self.fd, self.buf, self.fill, self.offset = fd, _buffer(), 0, 0
        self.view = memoryview(self.buf)
        self.array = np.frombuffer(self.buf, np.uint8)  # copies through numpy release the GIL

    def put(self, data: memoryview) -> None:
        while len(data):
            n = min(len(data), CHUNK - self.fill)
            if n >= 65536:
                self.array[self.fill : self.fill + n] = np.frombuffer(data, np.uint8, n)
            else:
                self.view[self.fill : self.fill + n] = data[:n]
            self.fill += n
            data = data[n:]
            if self.fill == CHUNK:
                self._write(CHUNK)

    def finish(self) -> None:
        if self.fill:
            padded = -(-self.fill // ALIGN) * ALIGN
            self.view[self.fill : padded] = bytes(padded - self.fill)
            self._write(padded)

    def _write(self, n: int) -> None:
        done = 0
        while done < n:
            wrote = os.pwrite(self.fd, self.view[done:n], self.offset + done)
            if wrote <= 0 or (done + wrote < n and (done + wrote) % ALIGN):
                raise OSError(errno.ENOSPC, "short write")  # a partial direct write: the device is full
            done += wrote
        self.offset += n
        self.fill = 0

    def close(self) -> None:
        del self.array
        self.view.release()


def write_direct(path: str, fd: int, pieces, size: int) -> bool:
    """Write `size` bytes given as memoryview `pieces` (an iterable) to the empty file `path`,
    whose descriptor `fd` the caller owns, with O_DIRECT. False, with the file still empty, when
    the filesystem refuses O_DIRECT; any other OSError propagates."""
    try:
        dfd = os.open(path, os.O_WRONLY | os.O_DIRECT | getattr(os, "O_NOFOLLOW", 0))
    except OSError as exc:
        if exc.errno in _REFUSED:
            return False
        raise
    stream = _Stream(dfd)
    try:
        for piece in pieces:
            stream.put(piece)
        stream.finish()
    except OSError as exc:
        if exc.errno in _REFUSED and stream.offset == 0:  # refused at the first write: nothing written
            os.ftruncate(fd, 0)
            return False
        raise
    finally:
        stream.close()
        os.close(dfd)
    os.ftruncate(fd, size)  # drop the padding of the last block
    return True
