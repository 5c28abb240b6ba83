"""What every reader returns, and the small checks they share (pure: no torch, no pandas).

Usage: Loaded(format="gkamradt", source=path, records=rows, scale=ScoreScale(0, 10, "ChatGPT Score", judge=True))

A reader turns one tool's files into `ResultRecord` rows, the same rows `aggregate` builds the heatmap from, with
each score stored as a share of its scale in [0, 1] and the scale kept beside them. Bad content is a
`ResultsError` naming the file (and the row or key), never a traceback.
"""

from __future__ import annotations

import json
import math
from collections import Counter
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Iterable

from kanana_longctx.errors import ResultsError, json_error_text
from kanana_longctx.plot.grid import depth_key
from kanana_longctx.plot.scale import ScoreScale
from kanana_longctx.results import ResultRecord, RunInfo

# How many files a directory sniff opens before it decides (a results directory can hold thousands).
SNIFF_FILES = 3


@dataclass(frozen=True)
class Loaded:
    """One model's results as read from one source."""

    format: str  # the reader's registry name
    source: Path  # what was read (a file or a directory)
    records: tuple[ResultRecord, ...]
    scale: ScoreScale
    model: str = ""  # the model name the source records ("" when it records none)
    form: str = ""  # retform | qaform | "" (foreign tools do not say)
    info: RunInfo | None = None  # our run.json, when there is one
    planned_lengths: tuple[int, ...] = ()
    planned_depths: tuple[float, ...] = ()
    # Each row is one probe scored on its own. False for rows that are already means of several samples (a report's
    # per-cell score): those are never counted as Bernoulli trials, so they get no Wilson interval or McNemar test.
    trials: bool = True
    warnings: tuple[str, ...] = ()


def record(
    length: int, depth: float, share: float, *, task: str = "single", repeat: int = 0, lang: str = "", form: str = "",
    expected: str = "", output: str = "", outcome: str = "", probe_id: str = "",
) -> ResultRecord:
    """A result row from a foreign format; `share` is the score as a share of its scale."""
    return ResultRecord(
        probe_id=probe_id or f"L{length}-D{depth:g}", length=int(length), depth=float(depth), score=float(share),
        expected=expected, output=output, n_tokens=int(length), needle_token_start=0, form=form, lang=lang,
        task=task or "single", repeat=repeat, outcome=outcome,
    )


def number_repeats(records: Iterable[ResultRecord]) -> list[ResultRecord]:
    """Give rows that do not say which repeat they are their order within their cell (0, 1, ...), so that two runs
    pair the k-th probe of a cell with the k-th."""
    seen: Counter = Counter()
    out = []
    for r in records:
        key = (r.length, depth_key(r.depth), r.task, r.lang)
        out.append(replace(r, repeat=seen[key]))
        seen[key] += 1
    return out


def load_json(path: Path) -> object:
    """Parse a JSON file; one line naming the file and the place on failure."""
    try:
        text = Path(path).read_bytes().decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ResultsError(f"{path}: not UTF-8 ({exc.reason} at byte {exc.start})") from None
    try:
        return json.loads(text)
    except RecursionError:
        raise ResultsError(f"{path}: not valid JSON (nested too deeply)") from None
    except json.JSONDecodeError as exc:
        raise ResultsError(json_error_text(path, exc)) from None


def peek_json(path: Path) -> object | None:
    """The parsed file, or None when it is not readable JSON (for sniffing: never raises)."""
    try:
        return load_json(path)
    except (ResultsError, OSError):
        return None


def peek_jsonl(path: Path) -> dict | None:
    """The first JSON object of a JSONL file, or None (for sniffing: never raises)."""
    try:
        with open(path, encoding="utf-8") as handle:
            for line in handle:
                if line.strip():
                    obj = json.loads(line)
                    return obj if isinstance(obj, dict) else None
    except (OSError, UnicodeDecodeError, ValueError, RecursionError):
        return None
    return None


def number(value: object, what: str, where: str) -> float:
    """A finite number from a JSON value (bools are not numbers here)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(float(value)):
        raise ResultsError(f"{where}: {what} is {json.dumps(value)[:40]}, not a number")
    return float(value)


def whole(value: object, what: str, where: str) -> int:
    x = number(value, what, where)
    if x != int(x):
        raise ResultsError(f"{where}: {what} is {x:g}, not a whole number")
    return int(x)


def share_of(scale: ScoreScale, native: float, where: str) -> float:
    """A native score -> its share of `scale`; out of range is an error naming the scale."""
    if not scale.lo <= native <= scale.hi:
        raise ResultsError(f"{where}: score {native:g} is outside the {scale.range_text} scale of this format")
    return scale.share(native)


def sample_files(directory: Path, pattern: str) -> list[Path]:
    """A few files of `directory` matching `pattern`, sorted (sniffing looks at these only)."""
    try:
        return sorted(p for p in Path(directory).glob(pattern) if p.is_file())[:SNIFF_FILES]
    except OSError:
        return []


def group_by_model(rows: list[tuple[str, ResultRecord]]) -> dict[str, list[ResultRecord]]:
    """(model, row) pairs -> rows per model, in first-seen order."""
    groups: dict[str, list[ResultRecord]] = {}
    for model, row in rows:
        groups.setdefault(model, []).append(row)
    return groups
