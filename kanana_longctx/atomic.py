"""Crash-safe file writes.

`atomic_write_text` writes a temporary file in the same directory, fsyncs it, renames it over the target and fsyncs
the directory: a reader sees the old file or the new one, never half of either, even after a kill -9 or power loss.
A symlink target (HF cache snapshots link into shared blobs) is *replaced* by a regular file, never written through,
so the blob and every other snapshot that links to it stay untouched.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path


def fsync_dir(directory: Path) -> None:
    """Make a rename durable (no-op where directories cannot be opened, e.g. on Windows)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write_bytes(path: Path, data: bytes, *, mode: int | None = None) -> None:
    """Replace `path` with `data` atomically. A symlink at `path` is replaced by a regular file.

    The new file keeps the permission bits of the file it replaces (of the link's target for a symlink), unless
    `mode` is given.
    """
    path = Path(path)
    directory = path.parent
    if mode is None:
        try:
            mode = os.stat(path).st_mode & 0o777  # follows a symlink: the blob's bits
        except FileNotFoundError:
            mode = 0o644
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=directory)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp_name, mode)
        # os.replace renames over the directory entry itself: a symlink is replaced, its target is not touched.
        os.replace(tmp_name, path)
    except BaseException:
        try:
            os.unlink(tmp_name)
        except FileNotFoundError:
            pass
        raise
    fsync_dir(directory)


def atomic_write_text(path: Path, text: str, *, mode: int | None = None) -> None:
    """UTF-8 text version of `atomic_write_bytes`."""
    atomic_write_bytes(path, text.encode("utf-8"), mode=mode)
