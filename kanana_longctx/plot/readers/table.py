"""A plain table of results: CSV (or TSV) or JSONL with `length, depth, score[, model, form]`.

Usage: loaded = read(Path("scores.csv"))  # one Loaded per value of the model column

Columns (case-insensitive): `length` (tokens), `depth` (percent), `score`; optional `model`, `form`, `lang`, `task`,
`repeat` and `outcome`. The score keeps its own scale, taken from the data: 0-1 when every score is at most 1, 0-10
when at most 10, else 0-100 (`--score-label` names it). Rows of one cell without a `repeat` are numbered in order.
"""

from __future__ import annotations

import csv
from pathlib import Path

from kanana_longctx.errors import ResultsError
from kanana_longctx.plot.readers.common import (
    Loaded, group_by_model, number, number_repeats, peek_jsonl, record, share_of, whole,
)
from kanana_longctx.plot.scale import ScoreScale
from kanana_longctx.results import read_jsonl

NAME = "table"
DESCRIPTION = "a plain CSV/TSV/JSONL of length, depth, score[, model, form, lang, task, repeat, outcome]"
REQUIRED = ("length", "depth", "score")
_TEXT = ("model", "form", "lang", "task", "outcome")
_SCALES = (1.0, 10.0, 100.0)


def _has_columns(keys) -> bool:
    names = {str(k).strip().lower() for k in keys}
    return all(c in names for c in REQUIRED)


def sniff(path: Path) -> bool:
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix in (".csv", ".tsv"):
        try:
            with open(path, encoding="utf-8-sig", newline="") as handle:
                header = next(csv.reader(handle, delimiter="\t" if suffix == ".tsv" else ","), [])
        except (OSError, UnicodeDecodeError):
            return False
        return _has_columns(header)
    if suffix == ".jsonl":
        first = peek_jsonl(path)
        return first is not None and _has_columns(first)
    return False


def _objects(path: Path) -> tuple[list[dict], list[str]]:
    suffix = path.suffix.lower()
    if suffix == ".jsonl":
        return read_jsonl(path)
    if suffix not in (".csv", ".tsv"):
        raise ResultsError(f"{path}: a table is a .csv, .tsv or .jsonl file")
    try:
        with open(path, encoding="utf-8-sig", newline="") as handle:
            reader = csv.DictReader(handle, delimiter="\t" if suffix == ".tsv" else ",")
            rows = [dict(r) for r in reader]
            header = reader.fieldnames or []
    except UnicodeDecodeError as exc:
        raise ResultsError(f"{path}: not UTF-8 ({exc.reason} at byte {exc.start})") from None
    if not _has_columns(header):
        raise ResultsError(f"{path}: a table needs the columns {', '.join(REQUIRED)} (found: {', '.join(header)})")
    return rows, []


def _value(obj: dict, name: str):
    for key, value in obj.items():
        if str(key).strip().lower() == name:
            return value.strip() if isinstance(value, str) else value
    return None


def _num(obj: dict, name: str, where: str) -> float:
    value = _value(obj, name)
    if isinstance(value, str):
        try:
            value = float(value)
        except ValueError:
            raise ResultsError(f"{where}: {name} is {value!r}, not a number") from None
    if value is None:
        raise ResultsError(f"{where}: no {name}")
    return number(value, name, where)


def _scale_of(scores: list[float], path: Path) -> ScoreScale:
    if min(scores) < 0:
        raise ResultsError(f"{path}: score {min(scores):g} is negative; a table's scale is 0-1, 0-10 or 0-100")
    top = next((s for s in _SCALES if max(scores) <= s), None)
    if top is None:
        raise ResultsError(f"{path}: score {max(scores):g} is above 100; a table's scale is 0-1, 0-10 or 0-100")
    return ScoreScale(0.0, top, "Score")


def read(path: Path) -> list[Loaded]:
    path = Path(path)
    objects, warnings = _objects(path)
    if not objects:
        raise ResultsError(f"{path}: no result rows")
    parsed = []
    for index, obj in enumerate(objects):
        where = f"{path}:{index + (2 if path.suffix.lower() != '.jsonl' else 1)}"
        length = whole(_num(obj, "length", where), "length", where)
        depth, score = _num(obj, "depth", where), _num(obj, "score", where)
        text = {k: str(_value(obj, k) or "") for k in _TEXT}
        repeat = _value(obj, "repeat")
        parsed.append((where, length, depth, score, text, None if repeat in (None, "") else repeat))
    scale = _scale_of([p[3] for p in parsed], path)
    rows = []
    for where, length, depth, score, text, repeat in parsed:
        row = record(length, depth, share_of(scale, score, where), task=text["task"], lang=text["lang"],
                     form=text["form"], outcome=text["outcome"],
                     repeat=whole(_num({"repeat": repeat}, "repeat", where), "repeat", where) if repeat is not None else 0)
        rows.append((text["model"], row))
    numbered = all(p[5] is not None for p in parsed)
    forms = {r.form for _, r in rows if r.form}
    return [
        Loaded(format=NAME, source=path, records=tuple(group if numbered else number_repeats(group)), scale=scale,
               model=model, form=forms.pop() if len(forms) == 1 else "", warnings=tuple(warnings))
        for model, group in group_by_model(rows).items()
    ]
