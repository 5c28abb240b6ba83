"""gkamradt/LLMTest_NeedleInAHaystack (v1): a `results/` directory of one JSON object per test.

Usage: loaded = read(Path("results"))  # one Loaded per model named in the files

Each file (`<model>_len_<L>_depth_<D*100>_results.json`) holds `model`, `context_length`, `depth_percent`,
`version`, `needle`, `model_response`, `score`, `test_duration_seconds`, `test_timestamp_utc`. The score is an LLM
judge's grade on a 1-10 rubric (1, 3, 5, 7, 10): the tool's evaluator is an OpenAI chat model (gpt-4 in the 2023
script, gpt-3.5-turbo-0125 by default since), though the files do not name it. Its notebook draws them with the
colour bar label "Score"; the Kanana README figures, made from such files, say "ChatGPT Score", the label used
here. `version` numbers the repeats of a cell. A single JSON file, or a list of such objects (the repository's
`original_results` use `token_limit` for the length), reads the same way.
"""

from __future__ import annotations

from pathlib import Path

from kanana_longctx.errors import ResultsError
from kanana_longctx.plot.readers.common import (
    Loaded, group_by_model, load_json, number, peek_json, record, sample_files, share_of, whole,
)
from kanana_longctx.plot.scale import ScoreScale

NAME = "gkamradt"
DESCRIPTION = "gkamradt/LLMTest_NeedleInAHaystack: a results/ directory of one JSON per test"
SCALE = ScoreScale(lo=0.0, hi=10.0, label="ChatGPT Score", draw_factor=1.0, judge=True)
_LENGTH_KEYS = ("context_length", "token_limit")


def _is_result(obj: object) -> bool:
    return isinstance(obj, dict) and "depth_percent" in obj and "score" in obj and any(k in obj for k in _LENGTH_KEYS)


def _looks_like(obj: object) -> bool:
    if isinstance(obj, list):
        return bool(obj) and _is_result(obj[0])
    return _is_result(obj)


def sniff(path: Path) -> bool:
    path = Path(path)
    if path.is_dir():
        files = sample_files(path, "*.json")
        return bool(files) and all(_looks_like(peek_json(f)) for f in files)
    return path.suffix.lower() == ".json" and _looks_like(peek_json(path))


def _objects(path: Path) -> list[tuple[Path, int, object]]:
    """(file, index in file, object) for every test result under `path`."""
    files = sorted(p for p in path.glob("*.json") if p.is_file()) if path.is_dir() else [path]
    if not files:
        raise ResultsError(f"{path}: no .json result files")
    out = []
    for file in files:
        data = load_json(file)
        items = data if isinstance(data, list) else [data]
        out.extend((file, i, obj) for i, obj in enumerate(items))
    return out


def read(path: Path) -> list[Loaded]:
    path = Path(path)
    rows = []
    skipped = 0
    for file, index, obj in _objects(path):
        where = f"{file}" + (f" item {index + 1}" if index else "")
        if not isinstance(obj, dict):
            raise ResultsError(f"{where}: not a JSON object")
        if obj.get("score") is None:
            skipped += 1  # the judge gave no grade: a failed evaluation, not a 0
            continue
        length_key = next((k for k in _LENGTH_KEYS if k in obj), None)
        missing = [k for k in ("depth_percent",) if k not in obj] + ([] if length_key else ["context_length"])
        if missing:
            raise ResultsError(f"{where}: no {', '.join(missing)}")
        length = whole(obj[length_key], length_key, where)
        depth = number(obj["depth_percent"], "depth_percent", where)
        share = share_of(SCALE, number(obj["score"], "score", where), where)
        version = obj.get("version", 1)
        repeat = whole(version, "version", where) - 1 if version is not None else 0
        row = record(length, depth, share, repeat=max(repeat, 0), output=str(obj.get("model_response") or ""),
                     expected=str(obj.get("needle") or "").strip())
        rows.append((str(obj.get("model") or ""), row))
    if not rows:
        raise ResultsError(f"{path}: no graded results")
    warnings = (f"{path}: skipped {skipped} results without a score",) if skipped else ()
    return [
        Loaded(format=NAME, source=path, records=tuple(group), scale=SCALE, model=model, warnings=warnings)
        for model, group in group_by_model(rows).items()
    ]
