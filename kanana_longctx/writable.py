"""Can this process create an output directory's files? Asked before anything slow, without creating anything.

Usage: check_writable_dir(Path("runs/demo"), "--out")  # BadInput (one line, exit 2) when it cannot be written

A run first writes after its weights have loaded (run.json), so an unwritable `--out` used to cost a model load and
then fail with an OSError naming a temporary file the user never asked for (".run.json.x1y2.tmp"). The check walks
up to the nearest path that exists: a file there (or a link to nothing) means the directory can never be made; a
directory there must grant this process write and search access. os.access answers for the real user and for a
read-only file system alike (root passes permission bits, as it would when writing, but not a read-only mount).
Nothing is created: a refused run leaves no empty directory behind.
"""

from __future__ import annotations

import os
from pathlib import Path

from kanana_longctx.errors import BadInput


def nearest_existing(path: Path) -> Path:
    """`path` itself or its closest ancestor that exists (links are not followed: a dangling one counts)."""
    for candidate in (path, *path.parents):
        if os.path.lexists(candidate):
            return candidate
    return Path(".")


def check_writable_dir(path: Path, what: str = "--out") -> None:
    """Refuse, in one line naming `what`, a directory this process could not create or write files in."""
    path = Path(path)
    found = nearest_existing(path)
    where = f"{what} {path}"
    if not found.is_dir():
        kind = "a broken link" if found.is_symlink() and not found.exists() else "not a directory"
        if found == path:
            raise BadInput(f"{where} is {kind}; give a directory")
        raise BadInput(f"{where} cannot be created: {found} is {kind}")
    if not os.access(found, os.W_OK | os.X_OK):
        place = "this directory" if found == path else str(found)
        raise BadInput(
            f"{where} cannot be written: no permission to create files in {place} (or a read-only file system)"
        )
