"""Load a run for plotting and derive what the figure says about it: model name, form, size tag, scorer, YaRN.

Usage: run = load_run(Path("runs/x")); meta = figure_meta(run, run.grid)

A run is a directory holding `results.jsonl` (+ `run.json`) or a `results.jsonl` path (its `run.json`, if any, is
read from the same directory). Without run.json the figure can still be drawn, but the model name falls back to the
directory's name and the caller is warned.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from kanana_longctx.errors import ResultsError
from kanana_longctx.plot.grid import Grid, aggregate, size_tag
from kanana_longctx.results import RESULTS_NAME, ResultRecord, RunInfo, load_results, read_run_info

DEFAULT_SCORER = "exact match"

# GGUF files carry their quantisation in the name (SmolLM2-135M-Instruct.Q4_1.gguf); a figure title names the model.
_QUANT_SUFFIX = re.compile(r"[.\-_](?:I?Q\d[\w]*|[Ff](?:16|32)|BF16|bf16)$")


@dataclass(frozen=True)
class RunData:
    """One run as the plot command sees it."""

    source: Path  # the results.jsonl that was read
    records: tuple[ResultRecord, ...]
    info: RunInfo | None
    grid: Grid
    warnings: tuple[str, ...]

    @property
    def run_dir(self) -> Path:
        return self.source.parent


@dataclass(frozen=True)
class FigureMeta:
    """Everything the figure writes in words, and the file stem it is saved under."""

    model_name: str  # display name, e.g. "SmolLM2-135M-Instruct"
    form: str  # retform | qaform | "" when unknown
    tag: str  # "32k", "128k", "8k", ...
    scorer: str  # e.g. "exact match"
    native_context: int | None  # YaRN's original_max_position_embeddings, when the run used YaRN
    title: str
    subtitle: str

    @property
    def stem(self) -> str:
        """`<model>-niah-<form>-<tag>`, lower case like the Kanana README's asset names."""
        parts = [slugify(self.model_name), "niah"] + ([slugify(self.form)] if self.form else []) + [self.tag]
        return "-".join(parts)

    @property
    def score_label(self) -> str:
        # Scores are stored in [0, 1] and drawn x10 to keep the README's 0-10 colour bar; the label says both.
        return f"Score ({self.scorer}, ×10)"


def slugify(text: str) -> str:
    """File-name-safe and lower case; keeps letters of any script (a Hangul model name stays readable)."""
    slug = re.sub(r"[^\w.]+", "-", text.strip().lower()).strip("-.")
    return slug or "model"


def display_model_name(model: str) -> str:
    """What the user typed as MODEL -> the name a title shows: last path component, no `.gguf`, no quant suffix.

    'models/kanana-1.5-8b-base/' -> 'kanana-1.5-8b-base'; 'kakaocorp/kanana-1.5-8b-instruct-2505' ->
    'kanana-1.5-8b-instruct-2505'; 'smollm2' -> 'SmolLM2-135M-Instruct'.
    """
    text = model.strip().rstrip("/\\")
    if text.lower() == "smollm2":
        from kanana_longctx.hub import SMOLLM2_GGUF_NAME  # pure module: no torch

        text = SMOLLM2_GGUF_NAME
    name = re.split(r"[/\\]", text)[-1]
    if name == "config.json":
        parts = re.split(r"[/\\]", text)
        name = parts[-2] if len(parts) > 1 else name
    if name.lower().endswith(".gguf"):
        name = _QUANT_SUFFIX.sub("", name[: -len(".gguf")])
    return name or model


def _planned_axes(info: RunInfo | None) -> tuple[list[int], list[float]]:
    """The lengths and depths run.json planned (`grid: {"lengths": [...], "depths": [...]}`), if it says."""
    grid = info.grid if info is not None and isinstance(info.grid, dict) else {}
    lengths, depths = grid.get("lengths"), grid.get("depths")
    try:
        lengths = [int(x) for x in lengths] if isinstance(lengths, list) else []
        depths = [float(x) for x in depths] if isinstance(depths, list) else []
    except (TypeError, ValueError):
        return [], []  # a grid spec in another shape: fall back to the cells that have results
    return lengths, depths


def load_run(path: Path) -> RunData:
    """Read a run directory or a results.jsonl; raise ResultsError for a missing file or one with no rows."""
    path = Path(path)
    if not path.exists():
        raise ResultsError(f"{path}: no such run directory or results file")
    source = path / RESULTS_NAME if path.is_dir() else path
    if path.is_dir() and not source.is_file():
        raise ResultsError(f"{path}: not a run directory (no {RESULTS_NAME})")
    records, warnings = load_results(source)
    if not records:
        raise ResultsError(f"{source}: no result rows")
    info = read_run_info(source.parent)
    warnings = list(warnings)
    if info is None:
        warnings.append(f"{source.parent}: no run.json; model name taken from the directory name")
    lengths, depths = _planned_axes(info)
    grid = aggregate(records, planned_lengths=lengths, planned_depths=depths)
    return RunData(source=source, records=tuple(records), info=info, grid=grid, warnings=tuple(warnings))


def _native_context(info: RunInfo | None) -> int | None:
    yarn = info.yarn if info is not None else None
    if isinstance(yarn, dict) and yarn.get("original_max_position_embeddings"):
        try:
            return int(yarn["original_max_position_embeddings"])
        except (TypeError, ValueError):
            return None
    return None


def _form(run: RunData) -> str:
    if run.info is not None and run.info.form:
        return run.info.form
    forms = {r.form for r in run.records if r.form}
    return forms.pop() if len(forms) == 1 else ""


def figure_meta(
    run: RunData, model_name: str | None = None, title: str | None = None, max_length: int | None = None
) -> FigureMeta:
    """The README wording for this run; `model_name` and `title` override what run.json implies, `max_length` the
    longest length the size tag is taken from (a comparison tags the union of both runs' lengths)."""
    if model_name:
        name = model_name
    elif run.info is not None and run.info.model:
        name = display_model_name(run.info.model)
    else:
        name = run.run_dir.resolve().name or "model"
    tag = size_tag(max_length or run.grid.max_length)
    extra = run.info.extra if run.info is not None and isinstance(run.info.extra, dict) else {}
    scorer = str(extra.get("scorer") or DEFAULT_SCORER)
    return FigureMeta(
        model_name=name,
        form=_form(run),
        tag=tag,
        scorer=scorer,
        native_context=_native_context(run.info),
        title=title or f'Pressure Testing {name} {tag.upper()} via "Needle In A HayStack"',
        subtitle=f"Asking {name} To Do Fact Retrieval Across Context Lengths & Document Depth",
    )


def run_label(run: RunData, meta: FigureMeta, with_model: bool = True) -> str:
    """A short panel label for comparisons: the model (unless both panels show the same one), and YaRN on or off."""
    yarn = run.info.yarn if run.info is not None else None
    name = meta.model_name if with_model else ""
    if isinstance(yarn, dict):
        factor = yarn.get("factor")
        text = "YaRN" + (f" ×{factor:g}" if isinstance(factor, (int, float)) else "")
        return f"{name} + {text}" if name else text
    if run.info is not None:
        return f"{name} (no YaRN)" if name else "no YaRN"
    return name
