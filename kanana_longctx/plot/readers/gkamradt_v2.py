"""gkamradt/needle-in-a-haystack (v2): the JSONL result store, one row per probe (`schema_version: 2`).

Usage: loaded = read(Path("results/single.jsonl"))  # one Loaded per model_id

A row carries `run_name`, `model_id`, `task_type` (single | multi | uuid | uuid_chain), `context_length`,
`target_depth_percent`, `expected_answer`, `response`, `score: {"value": 0..1, "details": {...}}`, `status`
("ok" | "error") and `seed`. Scores are deterministic: exact (substring) match for single and uuid, the share of
facts found for multi, the share of the chain walked for uuid_chain. Rows with status "error" have no score and
are skipped with a warning. v2 draws no heatmap; the label names the scorer and the 0-1 scale is kept.
"""

from __future__ import annotations

from pathlib import Path

from kanana_longctx.errors import ResultsError
from kanana_longctx.plot.readers.common import (
    Loaded, group_by_model, number, number_repeats, peek_jsonl, record, share_of, whole,
)
from kanana_longctx.plot.scale import ScoreScale
from kanana_longctx.results import read_jsonl

NAME = "gkamradt-v2"
DESCRIPTION = "gkamradt/needle-in-a-haystack v2: its JSONL of schema_version 2 rows"
_SCORERS = {"single": "exact match", "uuid": "exact match", "multi": "share of facts found",
            "uuid_chain": "share of the chain"}


def _is_row(obj: object) -> bool:
    return isinstance(obj, dict) and obj.get("schema_version") == 2 and "target_depth_percent" in obj


def _files(path: Path) -> list[Path]:
    if path.is_dir():
        return sorted(p for p in path.glob("*.jsonl") if p.is_file() and _is_row(peek_jsonl(p)))
    return [path]


def sniff(path: Path) -> bool:
    path = Path(path)
    if path.is_dir():
        return bool(_files(path))
    return path.suffix.lower() == ".jsonl" and _is_row(peek_jsonl(path))


def _row(obj: dict, where: str, scale: ScoreScale):
    score = obj.get("score")
    if obj.get("status", "ok") != "ok" or score is None:
        return None
    value = score.get("value") if isinstance(score, dict) else score
    missing = [k for k in ("context_length", "target_depth_percent") if k not in obj]
    if missing:
        raise ResultsError(f"{where}: no {', '.join(missing)}")
    return record(
        whole(obj["context_length"], "context_length", where),
        number(obj["target_depth_percent"], "target_depth_percent", where),
        share_of(scale, number(value, "score.value", where), where),
        task=str(obj.get("task_type") or "single"), expected=str(obj.get("expected_answer") or ""),
        output=str(obj.get("response") or ""),
    )


def read(path: Path) -> list[Loaded]:
    path = Path(path)
    files = _files(path)
    if not files:
        raise ResultsError(f"{path}: no schema_version 2 JSONL files")
    rows, warnings, errors, tasks = [], [], 0, set()
    scale = ScoreScale(0.0, 1.0, "Score")
    for file in files:
        objects, file_warnings = read_jsonl(file)
        warnings.extend(file_warnings)
        for index, obj in enumerate(objects):
            row = _row(obj, f"{file}:{index + 1}", scale)
            if row is None:
                errors += 1
                continue
            tasks.add(row.task)
            rows.append((str(obj.get("model_id") or ""), row))
    if not rows:
        raise ResultsError(f"{path}: no scored rows (every row has status error)")
    if errors:
        warnings.append(f"{path}: skipped {errors} rows with status error (no answer, no score)")
    scorers = sorted({_SCORERS.get(t, t) for t in tasks})
    scale = ScoreScale(0.0, 1.0, f"Score ({', '.join(scorers)})")
    return [
        Loaded(
            format=NAME, source=path, records=tuple(number_repeats(group)), scale=scale, model=model,
            warnings=tuple(warnings),
        )
        for model, group in group_by_model(rows).items()
    ]
