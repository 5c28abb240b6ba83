"""What a probe set costs and how faithful it is, and writing it to `prompts.jsonl`.

Usage: `write_prompts(probe_set, out_dir); s = summarize(probe_set, params=8e9)`

The summary is plain data; the CLI renders it. "With prefix reuse" is what the runner's own reuse plan computes
(kanana_longctx.plan: the shared haystack once, and below the needle what probes with the needle at one place
share), planned for MAX_ROWS KV rows as a GPU run with room for them does (a CPU run has one row; the keyed
tasks, whose probes of a length share their column needles, then share less). Prefill FLOPs come from the same code as the runner's: with
`--params` the matmul estimate 2 x parameters x tokens (attention comes on top and grows with the square of the
length); with a model's `shape`, exactly what a run computes.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path

from kanana_longctx.atomic import fsync_dir
from kanana_longctx.errors import BadInput
from kanana_longctx.plan.flops import ModelShape, planned_flops, prefill_flops
from kanana_longctx.plan.memory import MAX_ROWS
from kanana_longctx.plan.reuse import plan_reuse, planned_tokens
from kanana_longctx.probes.spec import ProbeSet
from kanana_longctx.results import PROMPTS_NAME

DEPTH_TOLERANCE = 10.0  # percentage points between requested and actual depth before the summary warns


@dataclass(frozen=True)
class ProbeSetSummary:
    probes: int
    lengths: tuple[int, ...]
    depths: tuple[float, ...]
    form: str
    lang: str
    haystack: str
    haystack_hash: str
    haystack_repeats: int
    total_tokens: int  # sum of every probe's length
    reuse_tokens: int  # tokens the runner's reuse plan prefills
    shared_prefix_tokens: int
    max_depth_error: float  # largest |actual_depth - depth|, percentage points
    off_depth: int  # probes more than DEPTH_TOLERANCE points from their requested depth
    padded: int  # probes that needed filler tokens to be exact
    max_pad: int
    exact: bool  # every probe has n_tokens == length == len(input_ids)
    params: float | None = None
    flops: float | None = None  # prefill FLOPs without reuse (None without params or shape)
    reuse_flops: float | None = None  # what the reuse plan computes
    task: str = "single"  # the task described: "multikey: 1 asked key + 3 distractors (4 needles per probe)"
    repeats: int = 1
    max_new_tokens: int = 0  # the answer budget

    @property
    def reuse_share(self) -> float:
        """Share of the prefill tokens that prefix reuse saves."""
        return 1.0 - self.reuse_tokens / self.total_tokens if self.total_tokens else 0.0


def summarize(
    probe_set: ProbeSet,
    params: float | None = None,
    *,
    shape: ModelShape | None = None,
    trimmed: bool = False,
    rows: int = MAX_ROWS,
) -> ProbeSetSummary:
    """`params`: a parameter count for the matmul estimate; `shape` (a model's, plan.flops.ModelShape) instead
    counts attention too, and `trimmed` the fast engine's trimmed last layer, as the runner does; `rows`: the KV
    rows to plan for (1 for what a CPU run computes)."""
    from kanana_longctx.probes.tasks import resolve_task

    probes = probe_set.probes
    errors = [abs(p.actual_depth - p.depth) for p in probes]
    lengths = [p.n_tokens for p in probes]
    plan = plan_reuse([p.input_ids for p in probes], probe_set.shared_prefix_ids, rows)
    if shape is None and params is not None:
        shape = ModelShape.from_params(params)
    task = resolve_task(
        probe_set.task, distractors=probe_set.distractors,
        values=probe_set.values if probe_set.task == "multivalue" else None,
        queries=probe_set.queries if probe_set.task == "multiquery" else None,
    )
    return ProbeSetSummary(
        probes=len(probes),
        lengths=tuple(sorted({p.length for p in probes})),
        depths=tuple(sorted({p.depth for p in probes})),
        form=probe_set.form,
        lang=probe_set.lang,
        haystack=probe_set.haystack,
        haystack_hash=probe_set.haystack_hash,
        haystack_repeats=probe_set.haystack_repeats,
        total_tokens=sum(p.n_tokens for p in probes),
        reuse_tokens=planned_tokens(plan, lengths),
        shared_prefix_tokens=len(probe_set.shared_prefix_ids),
        max_depth_error=round(max(errors, default=0.0), 2),
        off_depth=sum(e > DEPTH_TOLERANCE for e in errors),
        padded=sum(p.pad_tokens > 0 for p in probes),
        max_pad=max((p.pad_tokens for p in probes), default=0),
        exact=all(p.n_tokens == p.length == len(p.input_ids) for p in probes),
        params=params,
        flops=sum(prefill_flops(shape, n) for n in lengths) if shape else None,
        reuse_flops=planned_flops(shape, plan, lengths, trimmed=trimmed and shape.layers > 0) if shape else None,
        task=task.describe(),
        repeats=probe_set.repeats,
        max_new_tokens=probe_set.max_new_tokens,
    )


_COUNT = re.compile(r"^\s*([0-9]*\.?[0-9]+(?:e[+-]?[0-9]+)?)\s*([kmbt]?)\s*$", re.IGNORECASE)
_SCALE = {"": 1.0, "k": 1e3, "m": 1e6, "b": 1e9, "t": 1e12}


def parse_count(text: str) -> float:
    """A parameter count: 8e9, 8B, 135M, 1.5b, 32.5B."""
    match = _COUNT.match(str(text))
    if not match:
        raise BadInput(f"cannot parse parameter count '{text}' (use e.g. 8e9, 8B or 135M)")
    value = float(match.group(1)) * _SCALE[match.group(2).lower()]
    if value <= 0:
        raise BadInput(f"parameter count must be positive, got '{text}'")
    return value


def human(x: float) -> str:
    """1.23e15 -> '1.23 P' (SI prefixes; FLOP and token counts)."""
    for scale, unit in ((1e18, "E"), (1e15, "P"), (1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(x) >= scale:
            return f"{x / scale:.2f} {unit}"
    return f"{x:.0f}"


def write_prompts(probe_set: ProbeSet, out_dir: Path, *, with_ids: bool = False) -> Path:
    """Write `out_dir/prompts.jsonl` (one probe per line) atomically: a reader never sees half a file.

    Streamed to a temporary file in the same directory and renamed, so a 60 MB file is never held twice.
    """
    out_dir = Path(out_dir)
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        raise BadInput(f"--out {out_dir} is not a directory") from None
    target = out_dir / PROMPTS_NAME
    fd, tmp = tempfile.mkstemp(prefix=f".{PROMPTS_NAME}.", suffix=".tmp", dir=out_dir)
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="\n") as handle:
            for probe in probe_set.probes:
                handle.write(json.dumps(probe.to_dict(with_ids=with_ids), ensure_ascii=False) + "\n")
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, target)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    fsync_dir(out_dir)
    return target


def read_prompts(path: Path) -> list[dict]:
    """The probe records of a prompts.jsonl (or of the one inside a directory)."""
    path = Path(path)
    if path.is_dir():
        path = path / PROMPTS_NAME
    with open(path, encoding="utf-8") as handle:
        return [json.loads(line) for line in handle if line.strip()]
