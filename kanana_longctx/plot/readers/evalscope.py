"""EvalScope (modelscope/evalscope) `needle_haystack` outputs: per-sample reviews, or the benchmark report.

Usage: loaded = read(Path("outputs/20260101_120000"))  # one Loaded per model

An output directory holds `reviews/<model>/needle_haystack_<subset>.jsonl` (one line per sample:
`sample_score.score.value` is `{"Context#<L> Depth#<D>": score}`, `sample_score.sample_metadata` repeats
`context_length` and `depth_percent`, `score.judge_summary` is set when an LLM judge graded it) and
`reports/<model>/needle_haystack.json` (per metric `Context#<L> Depth#<D>`, per subset the mean score and sample
count; report schema 2 stores the metric as `identity.name` `context_<L>_depth_<D>`). Reviews are read when present:
they are per probe. Scores are 0-1 (a judge's 1-10 verdict divided by 10, or normalised exact match), drawn 0-1 under
EvalScope's own colour-bar label "Score". Subsets `english`/`chinese` become languages `en`/`zh`.
"""

from __future__ import annotations

import re
from pathlib import Path

from kanana_longctx.errors import ResultsError
from kanana_longctx.plot.readers.common import (
    Loaded, load_json, number, number_repeats, peek_json, peek_jsonl, record, share_of,
)
from kanana_longctx.plot.scale import ScoreScale
from kanana_longctx.results import read_jsonl

NAME = "evalscope"
DESCRIPTION = "EvalScope needle_haystack: an outputs directory, a reviews .jsonl or a report .json"
BENCHMARK = "needle_haystack"
_KEY = re.compile(r"Context#(\d+) Depth#(\d+(?:\.\d+)?)")
_IDENTITY = re.compile(r"context_(\d+)_depth_(\d+)(?:_(\d+))?")
_LANGS = {"english": "en", "chinese": "zh"}
_USABLE = ("success", "fallback")  # EvalScope's ScoreStatus values that carry a score


def _scale(judge: bool) -> ScoreScale:
    return ScoreScale(0.0, 1.0, "Score", judge=judge)


def _is_review(obj: object) -> bool:
    return isinstance(obj, dict) and isinstance(obj.get("sample_score"), dict)


def _is_report(obj: object) -> bool:
    return isinstance(obj, dict) and isinstance(obj.get("metrics"), list) and (
        obj.get("dataset_name") == BENCHMARK or any(_cell_of_metric(m) for m in obj["metrics"][:3])
    )


def _find(path: Path, pattern: str) -> list[Path]:
    """Files matching `reviews/*/...` or `reports/*/...` in `path` or one level below (an outputs root)."""
    found = sorted(path.glob(pattern)) or sorted(path.glob(f"*/{pattern}"))
    return [p for p in found if p.is_file()]


def _review_files(path: Path) -> list[Path]:
    return _find(path, f"reviews/*/{BENCHMARK}_*.jsonl")


def _report_files(path: Path) -> list[Path]:
    return _find(path, f"reports/*/{BENCHMARK}.json")


def sniff(path: Path) -> bool:
    path = Path(path)
    if path.is_dir():
        return bool(_review_files(path) or _report_files(path))
    if path.suffix.lower() == ".jsonl":
        return _is_review(peek_jsonl(path))
    return path.suffix.lower() == ".json" and _is_report(peek_json(path))


def _cell_of_key(key: str) -> tuple[int, float] | None:
    match = _KEY.fullmatch(key.strip())
    return (int(match.group(1)), float(match.group(2))) if match else None


def _cell_of_metric(metric: object) -> tuple[int, float] | None:
    if not isinstance(metric, dict):
        return None
    identity = metric.get("identity") if isinstance(metric.get("identity"), dict) else {}
    dimensions = identity.get("dimensions") if isinstance(identity.get("dimensions"), dict) else {}
    for text in (metric.get("legacy_name"), metric.get("name"), dimensions.get("original_name")):
        if isinstance(text, str) and _cell_of_key(text):
            return _cell_of_key(text)
    match = _IDENTITY.fullmatch(str(identity.get("name", "")))
    if match:
        depth = float(match.group(2) + (f".{match.group(3)}" if match.group(3) else ""))
        return int(match.group(1)), depth
    return None


def _subset_of(file: Path) -> str:
    stem = file.stem
    return stem[len(BENCHMARK) + 1:] if stem.startswith(BENCHMARK + "_") else stem


def _review_row(obj: dict, where: str, lang: str):
    """One review line -> (row, judged) or None when its score is unusable (a failed judge is not a 0)."""
    sample = obj["sample_score"]
    score = sample.get("score") if isinstance(sample.get("score"), dict) else {}
    if str(score.get("status", "success")) not in _USABLE:
        return None
    values = score.get("value") if isinstance(score.get("value"), dict) else {}
    key = score.get("main_score_name") if score.get("main_score_name") in values else next(iter(values), None)
    if key is None:
        return None
    meta = sample.get("sample_metadata") if isinstance(sample.get("sample_metadata"), dict) else {}
    cell = _cell_of_key(str(key))
    if "context_length" in meta and "depth_percent" in meta:
        cell = (int(number(meta["context_length"], "context_length", where)),
                number(meta["depth_percent"], "depth_percent", where))
    if cell is None:
        raise ResultsError(f"{where}: no context length and depth (neither sample_metadata nor 'Context#L Depth#D')")
    value = number(values[key], f"score {key}", where)
    row = record(*cell, share_of(_scale(False), value, where), lang=lang, expected=str(obj.get("target") or ""),
                 output=str(score.get("prediction") or ""))
    return row, score.get("judge_summary") is not None


def _read_reviews(files: list[Path], model_of) -> list[Loaded]:
    groups: dict[str, tuple[list, list[str], list[bool]]] = {}
    for file in files:
        model = model_of(file)
        rows, warnings, judged = groups.setdefault(model, ([], [], []))
        objects, file_warnings = read_jsonl(file)
        warnings.extend(file_warnings)
        lang = _LANGS.get(_subset_of(file), _subset_of(file))
        unusable = 0
        for index, obj in enumerate(objects):
            got = _review_row(obj, f"{file}:{index + 1}", lang) if _is_review(obj) else None
            if got is None:
                unusable += 1
                continue
            rows.append(got[0])
            judged.append(got[1])
        if unusable:
            warnings.append(f"{file}: skipped {unusable} samples without a usable score")
    out = []
    for model, (rows, warnings, judged) in groups.items():
        if rows:
            out.append(Loaded(format=NAME, source=files[0].parent, records=tuple(number_repeats(rows)),
                              scale=_scale(any(judged)), model=model, warnings=tuple(warnings)))
    return out


def _read_report(file: Path) -> Loaded:
    data = load_json(file)
    if not _is_report(data):
        raise ResultsError(f"{file}: not an EvalScope report (no 'metrics' list)")
    rows = []
    for m_index, metric in enumerate(data["metrics"]):
        cell = _cell_of_metric(metric)
        if cell is None:
            continue  # a summary metric of the report, not a grid cell
        for category in metric.get("categories") or []:
            for subset in (category.get("subsets") or []) if isinstance(category, dict) else []:
                where = f"{file}: metric {m_index + 1}"
                if not isinstance(subset, dict) or subset.get("is_aggregate"):
                    continue
                share = share_of(_scale(False), number(subset.get("score"), "score", where), where)
                name = str(subset.get("name") or "")
                rows.append(record(*cell, share, lang=_LANGS.get(name, name)))
    if not rows:
        raise ResultsError(f"{file}: no 'Context#L Depth#D' metrics")
    judged = data.get("judge_summary") is not None
    warnings = (f"{file}: a report holds per-cell means; read the run's reviews/ for per-probe rows and intervals",)
    return Loaded(format=NAME, source=file, records=tuple(rows), scale=_scale(judged),
                  model=str(data.get("model_name") or ""), trials=False, warnings=warnings)


def read(path: Path) -> list[Loaded]:
    path = Path(path)
    if path.is_dir():
        reviews = _review_files(path)
        if reviews:
            return _read_reviews(reviews, lambda f: f.parent.name)
        reports = _report_files(path)
        if not reports:
            raise ResultsError(f"{path}: no reviews/*/{BENCHMARK}_*.jsonl or reports/*/{BENCHMARK}.json")
        return [_read_report(f) for f in reports]
    if path.suffix.lower() == ".jsonl":
        loaded = _read_reviews([path], lambda f: f.parent.name if f.parent.parent.name == "reviews" else "")
        if not loaded:
            raise ResultsError(f"{path}: no sample with a usable score")
        return loaded
    return [_read_report(path)]
