"""Readers of NIAH results, one pure module per format, behind one registry; detection or `--format-in NAME`.

Usage: loaded = read_source(Path("results"), format_in=None)  # -> list of Loaded, one per model in the source

Every reader has `NAME`, `DESCRIPTION`, `sniff(path) -> bool` (cheap, never raises) and `read(path) ->
list[Loaded]`. Detection asks them in `READERS` order, most specific first: our run directories, then the
foreign tools, and the plain table last (its columns are a subset of ours).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from kanana_longctx.errors import BadInput, ResultsError
from kanana_longctx.plot.readers import evalscope, gkamradt_v1, gkamradt_v2, kanana, needlebench, table
from kanana_longctx.plot.readers.common import Loaded


@dataclass(frozen=True)
class Reader:
    name: str
    description: str
    sniff: Callable[[Path], bool]
    read: Callable[[Path], list[Loaded]]


READERS = tuple(
    Reader(m.NAME, m.DESCRIPTION, m.sniff, m.read)
    for m in (kanana, gkamradt_v2, evalscope, needlebench, gkamradt_v1, table)
)
FORMAT_NAMES = tuple(r.name for r in READERS)


def get_reader(name: str) -> Reader:
    for reader in READERS:
        if reader.name == name.strip().lower():
            return reader
    raise BadInput(f"--format-in {name}: not one of {', '.join(FORMAT_NAMES)}")


def detect(path: Path) -> Reader:
    path = Path(path)
    if not path.exists():
        raise ResultsError(f"{path}: no such run directory or results file")
    for reader in READERS:
        if reader.sniff(path):
            return reader
    what = "not a run directory (no results.jsonl) nor a results directory" if path.is_dir() else "not a results file"
    raise ResultsError(
        f"{path}: {what} of another known format ({', '.join(FORMAT_NAMES[1:])}); "
        "if it is one of them, say which with --format-in"
    )


def read_source(path: Path, format_in: str | None = None) -> list[Loaded]:
    path = Path(path)
    reader = get_reader(format_in) if format_in else detect(path)
    if not path.exists():
        raise ResultsError(f"{path}: no such run directory or results file")
    loaded = reader.read(path)
    if not loaded:
        raise ResultsError(f"{path}: no result rows")
    return loaded


__all__ = ["FORMAT_NAMES", "Loaded", "READERS", "Reader", "detect", "get_reader", "read_source"]
