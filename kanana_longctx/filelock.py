"""An exclusive, OS-level lock on a path, held by one process at a time and released when that process dies.

Usage: with exclusive_lock(config_path, on_wait=lambda pid: ...): read, modify, write

The lock is `fcntl.flock` on a hidden lock file beside the path (`.NAME.kanana-longctx.lock`). The kernel drops a
flock when its process exits, kill -9 included, so no stale lock survives a crash. The lock file is removed on
release, while still locked; a waiter that then wakes on the removed file sees that the path no longer names the
file it locked and starts over, so two processes can never hold the lock at once. The file holds the holder's
process id, for the message that names it. POSIX only (fcntl); elsewhere the lock is a no-op.
"""

from __future__ import annotations

import contextlib
import os
import time
from pathlib import Path
from typing import Callable, Iterator

from kanana_longctx.errors import BadInput

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

LOCK_SUFFIX = ".kanana-longctx.lock"
POLL_SECONDS = 0.05


def lock_path(path: Path) -> Path:
    path = Path(path)
    return path.with_name(f".{path.name}{LOCK_SUFFIX}")


def _holder(fd: int) -> int | None:
    try:
        text = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None


def _open_locked(
    lock: Path, target: Path, deadline: float, on_wait: Callable[[int | None], None] | None
) -> int | None:
    """One attempt: open (creating) the lock file and lock it, waiting until `deadline`. Returns the descriptor,
    or None when the file was removed or replaced while we waited (the caller tries again)."""
    fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
    told = False
    try:
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if not told and on_wait is not None:
                    on_wait(_holder(fd))
                    told = True
                if time.monotonic() >= deadline:
                    holder = _holder(fd)
                    who = f"process {holder}" if holder else "another process"
                    raise BadInput(f"{target} is in use by {who} (kanana-longctx config); try again later")
                time.sleep(POLL_SECONDS)
        try:
            same = os.path.samestat(os.fstat(fd), os.stat(lock))
        except FileNotFoundError:
            same = False
        if not same:
            os.close(fd)
            return None
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode("ascii"), 0)
        return fd
    except BaseException:
        with contextlib.suppress(OSError):
            os.close(fd)
        raise


@contextlib.contextmanager
def exclusive_lock(
    path: Path, *, timeout: float = 120.0, on_wait: Callable[[int | None], None] | None = None
) -> Iterator[Path]:
    """Hold the lock for `path` inside the block. `on_wait(holder_pid)` is called once if another process holds it;
    after `timeout` seconds of waiting, BadInput names the holder. Raises BadInput when the lock file cannot be
    created (a directory we cannot write in)."""
    lock = lock_path(path)
    if fcntl is None:  # pragma: no cover
        yield lock
        return
    deadline = time.monotonic() + timeout
    fd = None
    try:
        while fd is None:
            try:
                fd = _open_locked(lock, Path(path), deadline, on_wait)
            except OSError as exc:
                raise BadInput(f"cannot write in {lock.parent} ({exc.strerror or exc}); nothing was written") from None
        yield lock
    finally:
        if fd is not None:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(lock)  # while still locked: see the module docstring
            os.close(fd)
