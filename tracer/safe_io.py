"""Opening files of an untrusted trace directory: only by name pattern, only regular files inside it.

Every file a reader takes from a trace goes through `open_in_dir`: the name must match one of
the trace's file patterns (no "/", no ".."), it is opened relative to the directory's own file
descriptor with O_NOFOLLOW (a symlink is refused, never followed out of the directory) and
O_NONBLOCK (a FIFO cannot block), and fstat must say it is a regular file no larger than the
caller's limit before one byte is read.
"""

from __future__ import annotations

import errno
import os
import stat

from .trace_format import FIXED_FILES, STEP_FILE, TraceError

_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
_NONBLOCK = getattr(os, "O_NONBLOCK", 0)
_DIRECTORY = getattr(os, "O_DIRECTORY", 0)


def valid_name(name: object) -> bool:
    """True for the names a trace may hold: its fixed files (trace_format.FIXED_FILES) and step_N.safetensors."""
    return isinstance(name, str) and (name in FIXED_FILES or STEP_FILE.match(name) is not None)


def open_dir(path: str) -> int:
    """A descriptor of the trace directory (the path itself may be a symlink the user chose)."""
    try:
        return os.open(path, os.O_RDONLY | _DIRECTORY)
    except FileNotFoundError:
        raise TraceError(f"{path}: no such trace directory") from None
    except NotADirectoryError:
        raise TraceError(f"{path}: not a directory") from None
    except OSError as exc:
        raise TraceError(f"{path}: cannot open ({exc.strerror})") from None


def open_in_dir(dir_fd: int, name: str, max_bytes: int, label: str) -> tuple[int, int]:
    """(fd, size) of the regular file `name` directly inside the directory `dir_fd`.
    `label` names the file in messages. Raises TraceError, or FileNotFoundError when absent."""
    if not valid_name(name):
        raise TraceError(f"{label}: not a trace file name")
    try:
        fd = os.open(name, os.O_RDONLY | _NOFOLLOW | _NONBLOCK, dir_fd=dir_fd)
    except FileNotFoundError:
        raise
    except OSError as exc:  # ELOOP: a symlink; ENXIO etc.: a socket or device
        raise TraceError(f"{label}: refused ({'a symbolic link' if exc.errno == errno.ELOOP else exc.strerror})") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise TraceError(f"{label}: refused (not a regular file)")
        if st.st_size > max_bytes:
            raise TraceError(f"{label}: too large ({st.st_size} bytes, limit {max_bytes})")
        if _NONBLOCK:
            os.set_blocking(fd, True)
        return fd, st.st_size
    except BaseException:
        os.close(fd)
        raise


def read_in_dir(dir_fd: int, name: str, max_bytes: int, label: str) -> bytes:
    """The whole content of a regular trace file, size checked before reading."""
    fd, size = open_in_dir(dir_fd, name, max_bytes, label)
    try:
        chunks, left = [], size
        while left > 0:
            chunk = os.read(fd, min(left, 1 << 24))
            if not chunk:
                break
            chunks.append(chunk)
            left -= len(chunk)
        return b"".join(chunks)
    except OSError as exc:
        raise TraceError(f"{label}: cannot read ({exc.strerror})") from None
    finally:
        os.close(fd)


def read_trace_file(trace_dir: str, name: str, max_bytes: int) -> bytes:
    """The whole content of the file `name` of the trace at `trace_dir` (read_in_dir's rules).
    FileNotFoundError when it is absent; TraceError when it is refused or unreadable."""
    dir_fd = open_dir(trace_dir)
    try:
        return read_in_dir(dir_fd, name, max_bytes, f"{trace_dir}: {name}")
    finally:
        os.close(dir_fd)


def stat_in_dir(dir_fd: int, name: str, label: str) -> int:
    """Size of a regular trace file without following symlinks (TraceError otherwise)."""
    if not valid_name(name):
        raise TraceError(f"{label}: not a trace file name")
    try:
        st = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    except FileNotFoundError:
        raise TraceError(f"{label}: missing") from None
    except OSError as exc:
        raise TraceError(f"{label}: cannot read ({exc.strerror})") from None
    if not stat.S_ISREG(st.st_mode):
        raise TraceError(f"{label}: refused (not a regular file)")
    return st.st_size
