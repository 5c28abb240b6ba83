"""One writer per run directory: an OS-level lock on `DIR/.kanana-longctx.lock`, taken before a run's first write
and held to its end (pure: no torch).

Usage: with run_dir_lock(out_dir): ...   # a second process gets ResultsError naming the first

The lock is `fcntl.flock` on that file. The kernel drops a flock when its process exits, kill -9 included, so a
crashed run leaves no stale lock: the file stays behind, and the next run's flock on it simply succeeds. While a
process holds it the file records who (pid, host, start time), for the message the second process gets. The file
is never removed: a removal would let a waiter lock the unlinked file while a newcomer locks a fresh one, and two
writers would each believe they were alone. Data-parallel ranks of one run share their first rank's lock (the
runner takes it there, before the barrier that the other ranks pass before their first write). POSIX only
(fcntl); elsewhere the lock is a no-op.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import time
from pathlib import Path
from typing import Iterator

from kanana_longctx.errors import ResultsError

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

LOCK_NAME = ".kanana-longctx.lock"


def lock_file(out_dir: Path) -> Path:
    return Path(out_dir) / LOCK_NAME


def holder_record(command: str) -> dict:
    """What the lock file says about its holder."""
    return {
        "pid": os.getpid(),
        "host": socket.gethostname(),
        "started": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()),
        "command": command,
    }


def describe_holder(text: str) -> str:
    """The holder as the refusal names it; 'another process' when the record is unreadable (being written)."""
    try:
        data = json.loads(text)
        pid, host, started, command = data["pid"], data["host"], data["started"], data["command"]
    except (ValueError, TypeError, KeyError, RecursionError):
        return "another process"
    return f"process {pid} on {host} ({command}, started {started})"


HOLDER_WAIT_S = 0.5  # how long a refused process waits for the holder's record, written just after its flock


def _read_holder(fd: int) -> str:
    """The holder's description. A holder writes its record right after it takes the lock, so a process refused
    in between finds the file empty: it reads again for up to HOLDER_WAIT_S before saying 'another process'."""
    deadline = time.monotonic() + HOLDER_WAIT_S
    while True:
        holder = describe_holder(os.pread(fd, 4096, 0).decode("utf-8", "replace"))
        if holder != "another process" or time.monotonic() >= deadline:
            return holder
        time.sleep(0.01)


def acquire(out_dir: Path, command: str = "kanana-longctx niah") -> int | None:
    """Lock `out_dir` (made if missing) for this process; the descriptor to `release`. ResultsError, changing
    nothing, when another process holds it."""
    if fcntl is None:  # pragma: no cover
        return None
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    fd = os.open(lock_file(out_dir), os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        try:
            holder = _read_holder(fd)
        finally:
            os.close(fd)
        raise ResultsError(
            f"{out_dir} is in use by {holder}: wait for it to end, or use another --out"
        ) from None
    except BaseException:
        os.close(fd)
        raise
    os.ftruncate(fd, 0)
    os.pwrite(fd, json.dumps(holder_record(command)).encode("utf-8"), 0)
    return fd


def release(fd: int | None) -> None:
    """Give the lock up (closing the descriptor drops the flock); the file stays, see the module docstring."""
    if fd is not None:
        os.close(fd)


@contextlib.contextmanager
def run_dir_lock(out_dir: Path, command: str = "kanana-longctx niah") -> Iterator[None]:
    fd = acquire(out_dir, command)
    try:
        yield
    finally:
        release(fd)
