"""Result records, run metadata and the crash-safe JSONL file they live in (pure: no torch).

`results.jsonl` is append-only: one JSON object per finished probe, each line written with a single `write` and
fsynced, so a run killed with SIGKILL loses at most the batch in flight and leaves at most one torn last line, which
readers skip (and the writer cuts off before appending again). `run.json` describes the configuration; a resumed run
must match it (see `RunInfo.fingerprint`).
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import MISSING, asdict, dataclass, field, fields
from pathlib import Path
from typing import Iterable

from kanana_longctx.atomic import atomic_write_text
from kanana_longctx.errors import ResultsError, json_error_text

RESULTS_NAME = "results.jsonl"
RUN_NAME = "run.json"
PROMPTS_NAME = "prompts.jsonl"


@dataclass(frozen=True)
class ResultRecord:
    probe_id: str
    length: int
    depth: float
    score: float  # in [0, 1]
    expected: str
    output: str  # raw generated text
    n_tokens: int
    needle_token_start: int
    needle_token_end: int = 0
    seed: int = 0
    form: str = ""
    lang: str = ""
    haystack: str = ""
    new_tokens: int = 0
    prefill_tokens: int = 0  # tokens actually computed in prefill (less than n_tokens when a prefix was reused)
    seconds: float = 0.0
    extra: dict = field(default_factory=dict)  # the backend's own facts about this row (written only when any)
    task: str = "single"  # single | multikey | multivalue | multiquery | absent
    repeat: int = 0  # which of the cell's probes
    outcome: str = ""  # failure class (kanana_longctx.scoring.OUTCOMES); "" in rows of older runs
    max_new_tokens: int = 0  # the answer budget the row ran with (outcome "truncated": it was used up)
    keys: tuple[str, ...] = ()  # the keys asked (keyed tasks)
    expected_values: tuple[str, ...] = ()  # every value a right answer gives
    found_values: tuple[str, ...] = ()  # those the answer gives
    distractor_values: tuple[str, ...] = ()  # values of the probe's other needles
    named_distractors: tuple[str, ...] = ()  # those the answer gives

    def to_dict(self) -> dict:
        data = asdict(self)
        if not data["extra"]:
            del data["extra"]
        return data

    @classmethod
    def from_dict(cls, data: dict) -> "ResultRecord":
        names = {f.name for f in fields(cls)}
        kwargs = {k: v for k, v in data.items() if k in names}
        for name in _TUPLES:
            if name in kwargs:
                kwargs[name] = tuple(kwargs[name])
        return cls(**kwargs)


_TUPLES = ("keys", "expected_values", "found_values", "distractor_values", "named_distractors")


# What a run.json written before probe tasks existed implies about its grid: the single needle, once per cell.
GRID_DEFAULTS = {"task": "single", "distractors": 0, "values": 1, "queries": 1, "repeats": 1}


@dataclass(frozen=True)
class RunInfo:
    """What `run.json` holds. `fingerprint()` is the part that must match for a resumed run to append."""

    model: str
    form: str
    lang: str
    haystack: str
    haystack_hash: str
    grid: dict
    seed: int
    yarn: dict | None
    max_new_tokens: int
    attention: str = ""
    dtype: str = ""
    device: str = ""
    gpu_name: str = ""
    engine: str = ""
    versions: dict = field(default_factory=dict)
    extra: dict = field(default_factory=dict)

    def fingerprint(self) -> dict:
        """Settings that change answers. Kernel, device and versions may differ between a run and its resume."""
        return {
            "model": self.model,
            "form": self.form,
            "lang": self.lang,
            "haystack_hash": self.haystack_hash,
            "grid": {**GRID_DEFAULTS, **self.grid},
            "seed": self.seed,
            "yarn": self.yarn,
            "max_new_tokens": self.max_new_tokens,
        }

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "RunInfo":
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})


def read_jsonl(path: Path) -> tuple[list[dict], list[str]]:
    """Read a JSONL file; return (objects, warnings). A torn *last* line is skipped with a warning; a corrupt line
    elsewhere is an error (the file was edited or is not ours)."""
    path = Path(path)
    if not path.is_file():
        raise ResultsError(f"{path}: no such file")
    try:
        raw = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ResultsError(f"{path}: not UTF-8 ({exc.reason} at byte {exc.start})") from None
    lines = raw.split("\n")
    objects: list[dict] = []
    warnings: list[str] = []
    last = max((i for i, line in enumerate(lines) if line.strip()), default=-1)
    for number, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
            problem = "" if isinstance(obj, dict) else f"{path}: line {number + 1} is {json_kind(obj)}, not an object"
        except RecursionError:
            raise ResultsError(f"{path}: line {number + 1}: JSON nested too deeply") from None
        except json.JSONDecodeError as exc:
            problem = json_error_text(path, exc, line=number + 1)
        except ValueError as exc:  # int() refusing a number of thousands of digits
            problem = f"{path}: invalid JSON at line {number + 1}: {exc}"
        if problem:
            if number == last:
                warnings.append(f"{path}: skipped a torn last line (line {number + 1}; an interrupted run?)")
                continue
            raise ResultsError(problem)
        objects.append(obj)
    return objects, warnings


class ResultsWriter:
    """Append records to results.jsonl durably. Cuts off a torn tail left by a killed run before appending."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self._repair_tail()
        self._handle = open(self.path, "ab")

    def _repair_tail(self) -> None:
        if not self.path.exists():
            return
        data = self.path.read_bytes()
        if not data or data.endswith(b"\n"):
            return
        cut = data.rfind(b"\n") + 1  # 0 when the only line is torn
        with open(self.path, "r+b") as handle:
            handle.truncate(cut)
            handle.flush()
            os.fsync(handle.fileno())

    def append(self, records: Iterable[ResultRecord]) -> None:
        payload = "".join(json.dumps(r.to_dict(), ensure_ascii=False) + "\n" for r in records).encode("utf-8")
        if not payload:
            return
        self._handle.write(payload)
        self._handle.flush()
        os.fsync(self._handle.fileno())

    def close(self) -> None:
        self._handle.close()

    def __enter__(self) -> "ResultsWriter":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def load_results(path: Path) -> tuple[list[ResultRecord], list[str]]:
    """Read results.jsonl (or the one inside a run directory) into records; check required fields."""
    path = Path(path)
    if path.is_dir():
        path = path / RESULTS_NAME
    objects, warnings = read_jsonl(path)
    records = []
    for index, obj in enumerate(objects):
        missing = [k for k in ("length", "depth", "score") if k not in obj]
        if missing:
            raise ResultsError(f"{path}: row {index + 1} has no {', '.join(missing)}")
        try:
            score = float(obj["score"])
            length = int(obj["length"])
            depth = float(obj["depth"])
        except (TypeError, ValueError):
            raise ResultsError(f"{path}: row {index + 1} has a non-numeric length, depth or score") from None
        if not 0.0 <= score <= 1.0:
            raise ResultsError(f"{path}: row {index + 1} has score {score}, outside [0, 1]")
        if not (math.isfinite(depth) and math.isfinite(score)):
            raise ResultsError(f"{path}: row {index + 1} has a depth or score that is not a finite number")
        obj = {k: v for k, v in obj.items() if v is not None}  # null: as if absent
        obj = {**obj, "score": score, "length": length, "depth": depth, **_optional_fields(obj, path, index)}
        obj.setdefault("probe_id", f"L{length}-D{depth:g}")
        for key, default in (("expected", ""), ("output", ""), ("n_tokens", length), ("needle_token_start", 0)):
            obj.setdefault(key, default)
        records.append(ResultRecord.from_dict(obj))
    return records, warnings


_TEXT_FIELDS = ("probe_id", "expected", "output", "form", "lang", "haystack", "task", "outcome")
_INT_FIELDS = ("n_tokens", "needle_token_start", "needle_token_end", "seed", "new_tokens", "prefill_tokens",
               "max_new_tokens")


def _check_types(obj: dict, path: Path, index: int) -> None:
    """Every field a row may carry has its type (null counts as absent), so that no later use of a row can fail."""
    where = f"{path}: row {index + 1}"
    for key in _TEXT_FIELDS:
        if obj.get(key) is not None and not isinstance(obj[key], str):
            raise ResultsError(f"{where} has a non-text {key}")
    for key in _INT_FIELDS:
        value = obj.get(key)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
            raise ResultsError(f"{where} has {key} {json.dumps(value)[:40]}, not a whole number")
    for key in _TUPLES:
        value = obj.get(key)
        if value is not None and not (isinstance(value, list) and all(isinstance(v, str) for v in value)):
            raise ResultsError(f"{where} has a {key} that is not a list of text")
    if obj.get("seconds") is not None and (isinstance(obj["seconds"], bool) or not isinstance(obj["seconds"], (int, float))):
        raise ResultsError(f"{where} has non-numeric seconds")
    if obj.get("extra") is not None and not isinstance(obj["extra"], dict):
        raise ResultsError(f"{where} has an extra that is not an object")


def _optional_fields(obj: dict, path: Path, index: int) -> dict:
    """`task`, `repeat` and `outcome`, checked; rows written before they existed lack them (the defaults apply)."""
    _check_types(obj, path, index)
    repeat = obj.get("repeat")
    if repeat is None:
        repeat = 0
    elif isinstance(repeat, bool) or not isinstance(repeat, int) or repeat < 0:
        raise ResultsError(f"{path}: row {index + 1} has repeat {repeat!r}: repeats are counted 0, 1, 2, ...")
    return {"task": obj.get("task") or "single", "repeat": repeat, "outcome": obj.get("outcome") or ""}


def row_mismatch(record: ResultRecord, run: dict) -> str:
    """'' when `record` could have been written by the run that `run` (a run.json's object, possibly partial)
    describes; else the first field that says otherwise, in words ("seed 7, not 0"). Fields the run.json lacks,
    and empty text fields of older rows, are not compared."""
    grid = run.get("grid") if isinstance(run.get("grid"), dict) else None
    wanted: list[tuple[str, object, object]] = []
    if isinstance(run.get("seed"), int):
        wanted.append(("seed", record.seed, run["seed"]))
    for name in ("lang", "form", "haystack"):
        if isinstance(run.get(name), str) and run[name] and getattr(record, name):
            wanted.append((name, getattr(record, name), run[name]))
    if grid is not None:
        wanted.append(("task", record.task, grid.get("task", GRID_DEFAULTS["task"])))
    budget = run.get("max_new_tokens")
    if isinstance(budget, int) and budget and record.max_new_tokens:
        wanted.append(("max_new_tokens", record.max_new_tokens, budget))
    for name, have, want in wanted:
        if have != want:
            return f"{name} {have!r}, not {want!r}"
    if grid is not None:
        lengths, depths = grid.get("lengths"), grid.get("depths")
        if isinstance(lengths, list) and lengths and record.length not in lengths:
            return f"length {record.length}, not in the grid"
        if isinstance(depths, list) and depths and all(isinstance(d, (int, float)) for d in depths) and not any(
            abs(record.depth - d) < 1e-6 for d in depths
        ):
            return f"depth {record.depth:g}, not in the grid"
        repeats = grid.get("repeats")
        if isinstance(repeats, int) and record.repeat >= repeats:
            return f"repeat {record.repeat}, past the grid's {repeats}"
    return ""


def select_rows(records: Iterable[ResultRecord], run: dict | None, source: Path) -> tuple[list[ResultRecord], list[str]]:
    """The rows of `source` that belong to its run: rows of another configuration than run.json's (`run`, None
    when there is none) and repeated rows of one probe (the first is kept) are dropped, each kind with a warning."""
    kept: list[ResultRecord] = []
    seen: set[tuple[str, int]] = set()
    foreign, first_foreign, duplicates = 0, "", 0
    for record in records:
        why = row_mismatch(record, run) if run else ""
        if why:
            foreign, first_foreign = foreign + 1, first_foreign or f"{record.probe_id}: {why}"
            continue
        key = (record.probe_id, record.repeat)
        if key in seen:
            duplicates += 1
            continue
        seen.add(key)
        kept.append(record)
    warnings = []
    if foreign:
        warnings.append(f"{source}: ignored {foreign} row(s) of another configuration than run.json's ({first_foreign})")
    if duplicates:
        warnings.append(f"{source}: dropped {duplicates} duplicate row(s) of a probe already there (the first kept)")
    return kept, warnings


def write_run_info(run_dir: Path, info: RunInfo) -> None:
    atomic_write_text(Path(run_dir) / RUN_NAME, json.dumps(info.to_dict(), indent=2, ensure_ascii=False) + "\n")


# run.json's fields and the JSON types each may have (a run's own checks and plot's partial reading share them).
RUN_FIELD_TYPES: dict[str, tuple[type, ...]] = {
    "model": (str,), "form": (str,), "lang": (str,), "haystack": (str,), "haystack_hash": (str,), "grid": (dict,),
    "seed": (int,), "yarn": (dict, type(None)), "max_new_tokens": (int,), "attention": (str,), "dtype": (str,),
    "device": (str,), "gpu_name": (str,), "engine": (str,), "versions": (dict,), "extra": (dict,),
}


def run_field_error(data: dict) -> str:
    """'' when every field of run.json's object `data` has its type; else the first that does not, in words."""
    for name, types in RUN_FIELD_TYPES.items():
        if name in data and (isinstance(data[name], bool) or not isinstance(data[name], types)):
            return f"'{name}' is {json.dumps(data[name])[:40]}, of the wrong type"
    return ""


def read_run_info(run_dir: Path) -> RunInfo | None:
    """The directory's run.json (None when there is none); ResultsError, one line, for one that is not JSON, not
    an object, lacks a field or has one of the wrong type."""
    path = Path(run_dir) / RUN_NAME
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_bytes().decode("utf-8"))
    except RecursionError:
        raise ResultsError(f"{path}: not a valid run.json (JSON nested too deeply)") from None
    except UnicodeDecodeError as exc:
        raise ResultsError(f"{path}: not UTF-8 ({exc.reason} at byte {exc.start})") from None
    except json.JSONDecodeError as exc:
        raise ResultsError(json_error_text(path, exc)) from None
    except ValueError as exc:
        raise ResultsError(f"{path}: invalid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise ResultsError(f"{path}: not a run.json: it holds {json_kind(data)}, not an object")
    wrong = run_field_error(data)
    if wrong:
        raise ResultsError(f"{path}: not a valid run.json ({wrong})")
    missing = [f.name for f in fields(RunInfo) if f.default is MISSING and f.default_factory is MISSING]
    missing = [name for name in missing if name not in data]
    if missing:
        raise ResultsError(f"{path}: not a complete run.json of this tool: no {', '.join(missing)}")
    return RunInfo.from_dict(data)


def json_kind(value: object) -> str:
    """How a parsed JSON value reads in a message: 'an array', 'a string', 'a number', 'null'."""
    if isinstance(value, dict):
        return "an object"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, bool):
        return "true or false"
    return "null" if value is None else "a number"

