"""A live session's temporary directory: named after its owner process, removed when that process
ends (normally, on an exception, on Ctrl-C or SIGTERM), and removed at the next start when the owner
was killed before it could (stdlib only: the CLI calls it before torch is imported)."""

from __future__ import annotations

import atexit
import os
import re
import shutil
import tempfile

LIVE_DIR_PREFIX = "stepscope-live-"  # then the owner's pid, "-", a random suffix
_OWNER = re.compile(re.escape(LIVE_DIR_PREFIX) + r"(\d+)-")
_owned: set[str] = set()


def make_live_dir() -> str:
    """A fresh temporary directory for a live session, removed when this process exits."""
    path = tempfile.mkdtemp(prefix=f"{LIVE_DIR_PREFIX}{os.getpid()}-")
    _owned.add(path)
    return path


def owns(path: str) -> bool:
    """`path` is a live directory this process made and has not removed yet."""
    return path in _owned


def remove_live_dir(path: str) -> None:
    """Remove a live directory this process made (any other path is left alone)."""
    if path in _owned:
        shutil.rmtree(path, ignore_errors=True)
        _owned.discard(path)


@atexit.register
def remove_owned() -> None:
    """Remove every live directory this process made."""
    for path in list(_owned):
        remove_live_dir(path)


def owner_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError):
        return True  # another user's process, or we cannot tell: keep the directory
    return True


def remove_stale_live_dirs(root: str | None = None) -> list[str]:
    """Remove the live directories a killed stepscope left in `root` (default: the temporary
    directory): only directories named by LIVE_DIR_PREFIX and an owner pid, owned by this user,
    whose owner process is gone. Returns the paths removed."""
    root = root or tempfile.gettempdir()
    try:
        names = os.listdir(root)
    except OSError:
        return []
    removed = []
    for name in names:
        match = _OWNER.match(name)
        if match is None or owner_alive(int(match.group(1))):
            continue
        path = os.path.join(root, name)
        try:
            st = os.lstat(path)
        except OSError:
            continue
        if not os.path.isdir(path) or os.path.islink(path) or st.st_uid != os.getuid():
            continue
        shutil.rmtree(path, ignore_errors=True)
        removed.append(path)
    return removed
