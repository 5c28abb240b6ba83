"""Our own run directories: `results.jsonl` plus an optional, possibly partial `run.json`.

Usage: [loaded] = read(Path("runs/x"))

The plot needs only what it draws, so `run.json` may hold any subset of its fields (a hand-written
`{"model": ..., "form": ...}` is enough); what it holds must have the right types. A missing run.json costs a
warning; a malformed one (not JSON, not an object, a field of the wrong type) is one error line. Rows that
run.json's configuration disowns (another seed, language, form, haystack, task, answer budget or grid cell) and
repeated rows of one probe are dropped with a warning: a heatmap never mixes two runs.
"""

from __future__ import annotations

import json
from pathlib import Path

from kanana_longctx.errors import ResultsError
from kanana_longctx.plot.readers.common import Loaded, load_json, peek_jsonl
from kanana_longctx.plot.scale import kanana_scale
from kanana_longctx.results import RESULTS_NAME, RUN_NAME, RunInfo, load_results, select_rows

NAME = "kanana"
DESCRIPTION = "a kanana-longctx run directory (results.jsonl + run.json) or its results.jsonl"
DEFAULT_SCORER = "exact match"

# run.json's fields as the plot reads them: the JSON types each may have, and the value a missing one takes.
_FIELDS: dict[str, tuple[tuple[type, ...], object]] = {
    "model": ((str,), ""),
    "form": ((str,), ""),
    "lang": ((str,), ""),
    "haystack": ((str,), ""),
    "haystack_hash": ((str,), ""),
    "grid": ((dict,), {}),
    "seed": ((int,), 0),
    "yarn": ((dict, type(None)), None),
    "max_new_tokens": ((int,), 0),
    "attention": ((str,), ""),
    "dtype": ((str,), ""),
    "device": ((str,), ""),
    "gpu_name": ((str,), ""),
    "engine": ((str,), ""),
    "versions": ((dict,), {}),
    "extra": ((dict,), {}),
}
_TYPE_NAMES = {str: "a string", dict: "an object", int: "a whole number", type(None): "null", list: "a list",
               float: "a number", bool: "true/false"}


def _kind(value: object) -> str:
    return _TYPE_NAMES.get(type(value), type(value).__name__)


def parse_run_info(data: object, path: Path) -> RunInfo:
    """A RunInfo from whatever subset of run.json's fields `data` has; missing fields take neutral defaults."""
    if not isinstance(data, dict):
        raise ResultsError(f"{path}: run.json holds {_kind(data)}, not an object")
    values = {}
    for name, (types, default) in _FIELDS.items():
        if name not in data:
            values[name] = default.copy() if isinstance(default, dict) else default
            continue
        value = data[name]
        if isinstance(value, bool) or not isinstance(value, types):
            wanted = " or ".join(_TYPE_NAMES[t] for t in types)
            raise ResultsError(f"{path}: '{name}' is {_kind(value)} ({json.dumps(value)[:40]}), expected {wanted}")
        values[name] = value
    return RunInfo(**values)


def _results_path(path: Path) -> Path:
    return path / RESULTS_NAME if path.is_dir() else path


def sniff(path: Path) -> bool:
    """A directory with results.jsonl; a file named results.jsonl (our name); a JSONL whose rows have probe ids."""
    path = Path(path)
    if path.is_dir():
        return (path / RESULTS_NAME).is_file()
    if path.suffix.lower() != ".jsonl":
        return False
    if path.name == RESULTS_NAME:
        return True
    first = peek_jsonl(path)
    return first is not None and "probe_id" in first and "score" in first


def _planned_axes(info: RunInfo | None, path: Path) -> tuple[tuple[int, ...], tuple[float, ...]]:
    """The lengths and depths run.json planned (`grid: {"lengths": [...], "depths": [...]}`), if it says."""
    grid = info.grid if info is not None else {}
    lengths, depths = grid.get("lengths"), grid.get("depths")
    try:
        lengths = tuple(int(x) for x in lengths) if isinstance(lengths, list) else ()
        depths = tuple(float(x) for x in depths) if isinstance(depths, list) else ()
    except (TypeError, ValueError):
        return (), ()  # a grid spec in another shape: fall back to the cells that have results
    return lengths, depths


def read(path: Path) -> list[Loaded]:
    path = Path(path)
    source = _results_path(path)
    if path.is_dir() and not source.is_file():
        raise ResultsError(f"{path}: not a run directory (no {RESULTS_NAME})")
    records, warnings = load_results(source)
    if not records:
        raise ResultsError(f"{source}: no result rows")
    run_json = source.parent / RUN_NAME
    data = load_json(run_json) if run_json.is_file() else None
    info = parse_run_info(data, run_json) if data is not None else None
    records, dropped = select_rows(records, data, source)  # rows of another configuration, repeated probes
    if not records:
        raise ResultsError(f"{source}: no result rows of run.json's configuration ({dropped[0]})")
    warnings = [*warnings, *dropped]
    if info is None:
        warnings.append(f"{source.parent}: no run.json; model name taken from the directory name (or --model-name)")
    scorer = str((info.extra if info is not None else {}).get("scorer") or DEFAULT_SCORER)
    lengths, depths = _planned_axes(info, source)
    forms = {r.form for r in records if r.form}
    form = (info.form if info is not None and info.form else "") or (forms.pop() if len(forms) == 1 else "")
    return [
        Loaded(
            format=NAME, source=source, records=tuple(records), scale=kanana_scale(scorer),
            model=info.model if info is not None else "", form=form, info=info, planned_lengths=lengths,
            planned_depths=depths, warnings=tuple(warnings),
        )
    ]
