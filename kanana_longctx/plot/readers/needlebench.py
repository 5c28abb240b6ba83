"""OpenCompass NeedleBench outputs: `results/<model>/<dataset>.json` files, or the summary CSV.

Usage: loaded = read(Path("outputs/needlebench/20260101_120000/results"))  # one Loaded per model

NeedleBench makes one dataset per cell, named `Length<L>Depth<D>_<kind>_<lang>_<size>`: `origin` is the single
needle, `<N>needle` the multi-needle reasoning task (read as task `<N>needle`); `parallel` datasets (several needles
at once, no depth axis) cannot be drawn on a depth grid and are skipped with a warning. OpenCompass writes each
dataset's evaluation to `results/<model_abbr>/<dataset_abbr>.json`, `{"score": 0..100, "details": [...]}`; the
evaluator's details are per sample (`{"pred", "answer", "score": 0 or 100}`) and are read as repeats when present.
The summary CSV (`summary/summary_<time>.csv`) has a `dataset` column and one score column per model (plus
`version`, `metric` and `mode` in the default summarizer's layout). Scores stay on NeedleBench's 0-100 scale.
"""

from __future__ import annotations

import csv
import re
from pathlib import Path

from kanana_longctx.errors import ResultsError
from kanana_longctx.plot.readers.common import Loaded, load_json, number, peek_json, record, share_of
from kanana_longctx.plot.scale import ScoreScale

NAME = "needlebench"
DESCRIPTION = "OpenCompass NeedleBench: results/<model>/<dataset>.json files or the summary CSV"
SCALE = ScoreScale(0.0, 100.0, "Score")
_DATASET = re.compile(r"Length(\d+)Depth(\d+(?:\.\d+)?)_(origin|\d+needle)_([a-z]+)(?:_(\w+))?")
_PARALLEL = re.compile(r"Length(\d+)_parallel_")
_NOT_MODELS = ("dataset", "version", "metric", "mode")


def _parse(name: str) -> tuple[int, float, str, str] | None:
    """'Length1000Depth50_origin_en_32k' -> (1000, 50.0, 'single', 'en')."""
    match = _DATASET.fullmatch(name)
    if not match:
        return None
    kind = match.group(3)
    return int(match.group(1)), float(match.group(2)), "single" if kind == "origin" else kind, match.group(4)


def _result_files(path: Path) -> list[Path]:
    """`path` is results/<model>/ (files here) or results/ (one directory per model)."""
    here = sorted(p for p in path.glob("Length*.json") if p.is_file())
    return here or sorted(p for p in path.glob("*/Length*.json") if p.is_file())


def sniff(path: Path) -> bool:
    path = Path(path)
    if path.is_dir():
        files = _result_files(path)
        return bool(files) and (_parse(files[0].stem) is not None or bool(_PARALLEL.match(files[0].stem)))
    if path.suffix.lower() == ".csv":
        try:
            with open(path, encoding="utf-8-sig", newline="") as handle:
                rows = list(zip(range(2), csv.reader(handle)))
        except (OSError, UnicodeDecodeError):
            return False
        return len(rows) == 2 and rows[0][1][:1] == ["dataset"] and bool(re.match(r"Length\d+", rows[1][1][0]))
    if path.suffix.lower() == ".json" and _parse(path.stem):
        obj = peek_json(path)
        return isinstance(obj, dict) and "score" in obj
    return False


def _file_rows(file: Path, cell) -> tuple[list, bool]:
    """The file's rows, and whether they are per sample (details) rather than one mean."""
    length, depth, task, lang = cell
    data = load_json(file)
    if not isinstance(data, dict):
        raise ResultsError(f"{file}: not a JSON object")
    details = data.get("details")
    if isinstance(details, list) and details and all(isinstance(d, dict) and "score" in d for d in details):
        return [
            record(length, depth, share_of(SCALE, number(d["score"], "score", f"{file} detail {i + 1}"), str(file)),
                   task=task, lang=lang, repeat=i, expected=str(d.get("answer") or ""), output=str(d.get("pred") or ""))
            for i, d in enumerate(details)
        ], True
    key = "score" if "score" in data else next((k for k in data if k.startswith("score")), None)
    if key is None:
        raise ResultsError(f"{file}: no score")
    return [record(length, depth, share_of(SCALE, number(data[key], key, str(file)), str(file)), task=task, lang=lang)], False


def _read_results(path: Path) -> list[Loaded]:
    files = _result_files(path)
    groups: dict[str, list] = {}
    per_sample: dict[str, bool] = {}
    parallel = 0
    for file in files:
        cell = _parse(file.stem)
        if cell is None:
            parallel += bool(_PARALLEL.match(file.stem))
            continue
        model = file.parent.name
        rows, sampled = _file_rows(file, cell)
        groups.setdefault(model, []).extend(rows)
        per_sample[model] = per_sample.get(model, True) and sampled
    if not groups:
        raise ResultsError(f"{path}: no Length<L>Depth<D>_... result files")
    warnings = (f"{path}: skipped {parallel} parallel (multi-retrieval) datasets: they have no depth axis",) if parallel else ()
    return [
        Loaded(format=NAME, source=path, records=tuple(rows), scale=SCALE, model=model, trials=per_sample[model],
               warnings=warnings + (() if per_sample[model] else (
                   f"{path}: per-dataset scores are means over NeedleBench's samples; dump details for per-probe rows",)))
        for model, rows in groups.items()
    ]


def _read_csv(path: Path) -> list[Loaded]:
    try:
        with open(path, encoding="utf-8-sig", newline="") as handle:
            table = list(csv.reader(handle))
    except UnicodeDecodeError as exc:
        raise ResultsError(f"{path}: not UTF-8 ({exc.reason} at byte {exc.start})") from None
    header = table[0] if table else []
    models = [(i, name) for i, name in enumerate(header) if name not in _NOT_MODELS]
    groups: dict[str, list] = {name: [] for _, name in models}
    for line, row in enumerate(table[1:], start=2):
        cell = _parse(row[0]) if row else None
        if cell is None:
            continue  # a group row, a parallel dataset, or the header repeated
        for i, name in models:
            text = row[i].strip() if i < len(row) else "-"
            if text in ("", "-"):
                continue  # this model has no result for this dataset
            try:
                value = float(text)
            except ValueError:
                raise ResultsError(f"{path}:{line}: {name} is {text!r}, not a score") from None
            groups[name].append(record(cell[0], cell[1], share_of(SCALE, value, f"{path}:{line}"), task=cell[2],
                                       lang=cell[3]))
    loaded = [
        Loaded(format=NAME, source=path, records=tuple(rows), scale=SCALE, model=name, trials=False,
               warnings=(f"{path}: summary scores are means over NeedleBench's samples (no per-probe rows)",))
        for name, rows in groups.items() if rows
    ]
    if not loaded:
        raise ResultsError(f"{path}: no Length<L>Depth<D>_... rows with scores")
    return loaded


def read(path: Path) -> list[Loaded]:
    path = Path(path)
    if path.is_dir():
        return _read_results(path)
    if path.suffix.lower() == ".csv":
        return _read_csv(path)
    cell = _parse(path.stem)
    if cell is None:
        raise ResultsError(f"{path}: not a NeedleBench dataset file (Length<L>Depth<D>_<kind>_<lang>_<size>.json)")
    rows, sampled = _file_rows(path, cell)
    return [Loaded(format=NAME, source=path, records=tuple(rows), scale=SCALE, model=path.parent.name, trials=sampled)]
