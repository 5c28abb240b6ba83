"""Load a run for plotting and derive what the figure says about it: model name, form, size tag, scale, YaRN.

Usage: run = load_run(Path("runs/x")); meta = figure_meta(run)

A run is one model's results from one source: our run directory (results.jsonl + run.json) or results.jsonl, or a
foreign tool's results (see `readers`), detected or named with `format_in`. A source holding several models, tasks
or languages must be narrowed to one (`model`, `task`, `lang`): a heatmap of a mixture would be a mean of unlike
things. Without a model name the figure is still drawn, named after the directory, and the caller is warned.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from pathlib import Path

from kanana_longctx.errors import ResultsError
from kanana_longctx.plot.grid import Grid, aggregate, size_tag
from kanana_longctx.plot.readers import Loaded, read_source
from kanana_longctx.plot.readers.kanana import DEFAULT_SCORER
from kanana_longctx.plot.scale import ScoreScale
from kanana_longctx.results import ResultRecord, RunInfo

# GGUF files carry their quantisation in the name (SmolLM2-135M-Instruct.Q4_1.gguf); a figure title names the model.
_QUANT_SUFFIX = re.compile(r"[.\-_](?:I?Q\d[\w]*|[Ff](?:16|32)|BF16|bf16)$")


@dataclass(frozen=True)
class RunData:
    """One run as the plot command sees it."""

    source: Path  # what was read: a results.jsonl, a results directory, a report file
    records: tuple[ResultRecord, ...]
    info: RunInfo | None
    grid: Grid
    warnings: tuple[str, ...]
    format: str = "kanana"  # the reader that read it
    scale: ScoreScale = ScoreScale()
    model: str = ""  # the model name the source records
    form: str = ""
    trials: bool = True  # rows are single probes (False: per-cell means from a report)

    @property
    def run_dir(self) -> Path:
        return self.source if self.source.is_dir() else self.source.parent

    @property
    def binary(self) -> bool:
        """Every row is one probe scored 0 or 1: Wilson intervals and McNemar apply."""
        return self.grid.binary


@dataclass(frozen=True)
class FigureMeta:
    """Everything the figure writes in words, and the file stem it is saved under."""

    model_name: str  # display name, e.g. "SmolLM2-135M-Instruct"
    form: str  # retform | qaform | "" when unknown
    tag: str  # "32k", "128k", "8k", ...
    scorer: str  # e.g. "exact match"; a foreign source's score label
    native_context: int | None  # YaRN's original_max_position_embeddings, when the run used YaRN
    title: str
    subtitle: str
    scale: ScoreScale = ScoreScale()

    @property
    def stem(self) -> str:
        """`<model>-niah-<form>-<tag>`, lower case like the Kanana README's asset names."""
        parts = [slugify(self.model_name), "niah"] + ([slugify(self.form)] if self.form else []) + [self.tag]
        return "-".join(parts)

    @property
    def score_label(self) -> str:
        return self.scale.label


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


def _pick_model(loaded: list[Loaded], model: str | None, path: Path) -> Loaded:
    if len(loaded) == 1:
        return loaded[0]
    names = [one.model or "(unnamed)" for one in loaded]
    if model:
        wanted = model.strip().lower()
        for one in loaded:
            if wanted in (one.model.lower(), display_model_name(one.model).lower()):
                return one
    raise ResultsError(
        f"{path} holds results of {len(loaded)} models ({', '.join(names)}): choose one with --model-name"
    )


def _narrow(records: tuple[ResultRecord, ...], field: str, wanted: str | None, path: Path) -> tuple[ResultRecord, ...]:
    """Keep the rows of one task or language; several without a choice is an error naming them."""
    values = sorted({getattr(r, field) or "-" for r in records})
    if wanted:
        kept = tuple(r for r in records if (getattr(r, field) or "-") == wanted)
        if not kept:
            raise ResultsError(f"{path}: no rows of {field} {wanted} (it has: {', '.join(values)})")
        return kept
    if len(values) > 1:
        raise ResultsError(f"{path} holds several {field}s ({', '.join(values)}): plot one with --{field}")
    return records


def load_run(
    path: Path, format_in: str | None = None, *, model: str | None = None, task: str | None = None,
    lang: str | None = None,
) -> RunData:
    """Read one model's results from `path` (detected, or read as `format_in`); raise ResultsError for a missing
    source, one with no rows, or one that mixes models, tasks or languages without a choice."""
    path = Path(path)
    loaded = _pick_model(read_source(path, format_in), model, path)
    records = _narrow(_narrow(loaded.records, "task", task, path), "lang", lang, path)
    warnings = list(loaded.warnings)
    if not loaded.model and not model and not (loaded.info is None and loaded.format == "kanana"):
        warnings.append(f"{loaded.source}: names no model; the title uses the directory's name (give --model-name)")
    grid = aggregate(records, planned_lengths=loaded.planned_lengths, planned_depths=loaded.planned_depths,
                     judge=loaded.scale.judge or not loaded.trials)
    return RunData(
        source=loaded.source, records=records, info=loaded.info, grid=grid, warnings=tuple(warnings),
        format=loaded.format, scale=loaded.scale, model=loaded.model, form=loaded.form, trials=loaded.trials,
    )


def _native_context(info: RunInfo | None) -> int | None:
    yarn = info.yarn if info is not None else None
    if isinstance(yarn, dict) and yarn.get("original_max_position_embeddings"):
        try:
            return int(yarn["original_max_position_embeddings"])
        except (TypeError, ValueError):
            return None
    return None


def figure_meta(
    run: RunData, model_name: str | None = None, title: str | None = None, max_length: int | None = None,
    score_label: str | None = None,
) -> FigureMeta:
    """The README wording for this run; `model_name`, `title` and `score_label` override what the source implies,
    `max_length` the longest length the size tag is taken from (a comparison tags the union of both runs' lengths)."""
    if model_name:
        name = model_name
    elif run.model:
        name = display_model_name(run.model)
    else:
        name = run.run_dir.resolve().name or "model"
    tag = size_tag(max_length or run.grid.max_length)
    extra = run.info.extra if run.info is not None else {}
    scorer = str(extra.get("scorer") or DEFAULT_SCORER) if run.format == "kanana" else run.scale.label
    scale = replace(run.scale, label=score_label) if score_label else run.scale
    return FigureMeta(
        model_name=name,
        form=run.form,
        tag=tag,
        scorer=scorer,
        native_context=_native_context(run.info),
        title=title or f'Pressure Testing {name} {tag.upper()} via "Needle In A HayStack"',
        subtitle=f"Asking {name} To Do Fact Retrieval Across Context Lengths & Document Depth",
        scale=scale,
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
