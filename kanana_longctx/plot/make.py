"""The one library call behind `kanana-longctx plot`: load runs, draw their figures, summarise them.

Usage: report = plot_runs([Path("runs/a")], PlotOptions(out_dir=Path("plots")))

Every run is loaded and every output name decided before anything is drawn, so a bad RUN or two runs that would
write the same file fail with nothing written. Warnings (a torn last line, no run.json, no Hangul font) are returned,
never printed. A comparison pairs the two runs' probes and tests them (`compare.compare_runs`) with a Generator
seeded from `PlotOptions.seed`, so the same inputs print the same p-values and intervals.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

from kanana_longctx.errors import BadInput
from kanana_longctx.limits import MAX_SEED
from kanana_longctx.plot.compare import Comparison, compare_runs
from kanana_longctx.plot.fonts import FONT_ENV
from kanana_longctx.plot.heatmap import FORMATS, CompareText, Extras, render_compare_figure, render_readme_figure
from kanana_longctx.plot.meta import FigureMeta, RunData, figure_meta, load_run, run_label, slugify
from kanana_longctx.plot.readers import get_reader
from kanana_longctx.plot.summary import Summary, summarize
from kanana_longctx.stats import ALPHA, smallest_exact_p

DEFAULT_OUT = Path("plots")
_NO_HANGUL_FONT = (
    "no font with Hangul found: Korean text is drawn as boxes (pip install koreanize-matplotlib, or set "
    f"{FONT_ENV} to a .ttf/.otf/.ttc)"
)


@dataclass(frozen=True)
class PlotOptions:
    out_dir: Path = DEFAULT_OUT
    formats: tuple[str, ...] = ("png",)
    dpi: int = 100
    title: str | None = None
    model_name: str | None = None
    compare: Path | None = None  # RUN_B: every RUN is drawn against it
    extras: Extras = field(default_factory=Extras)
    format_in: str | None = None  # read every RUN (and RUN_B) as this format instead of detecting it
    score_label: str | None = None  # replace the colour bar's label
    task: str | None = None  # plot the rows of this task only (needed when a source mixes several)
    lang: str | None = None  # plot the rows of this language only
    seed: int = 0  # of the Generator behind the resampling tests and bootstrap intervals


@dataclass(frozen=True)
class PlotResult:
    source: Path  # what was read
    meta: FigureMeta
    summary: Summary
    paths: tuple[Path, ...]
    label: str = ""
    compare_source: Path | None = None
    compare_label: str = ""
    compare_summary: Summary | None = None
    format: str = "kanana"  # the reader of `source`
    compare_format: str = ""
    comparison: Comparison | None = None


@dataclass(frozen=True)
class PlotReport:
    results: tuple[PlotResult, ...]
    warnings: tuple[str, ...]


def parse_formats(text: str) -> tuple[str, ...]:
    """'png,svg' -> ('png', 'svg'); raise BadInput for an unknown or empty list."""
    names = [part.strip().lower().lstrip(".") for part in text.split(",") if part.strip()]
    bad = [n for n in names if n not in FORMATS]
    if bad or not names:
        raise BadInput(f"--format: {', '.join(bad) or 'nothing given'} is not one of {', '.join(FORMATS)}")
    return tuple(dict.fromkeys(names))  # keep order, drop repeats


def _check_options(runs: Sequence[Path], options: PlotOptions) -> None:
    if not runs:
        raise BadInput("give at least one RUN (a run directory or a results.jsonl)")
    if not 10 <= options.dpi <= 1000:
        raise BadInput(f"--dpi {options.dpi}: use a value between 10 and 1000 (the README figures are 100)")
    if not 0 <= options.seed <= MAX_SEED:
        raise BadInput(f"--seed must be between 0 and {MAX_SEED}, got {options.seed}")
    bad = [f for f in options.formats if f not in FORMATS]
    if bad or not options.formats:
        raise BadInput(f"--format: {', '.join(bad) or 'nothing given'} is not one of {', '.join(FORMATS)}")
    if options.format_in:
        get_reader(options.format_in)  # an unknown name fails before anything is read


def _load(path: Path, options: PlotOptions) -> RunData:
    return load_run(Path(path), options.format_in, model=options.model_name, task=options.task, lang=options.lang)


def _check_scales(run_a: RunData, meta_a: FigureMeta, run_b: RunData, meta_b: FigureMeta) -> None:
    a, b = meta_a.scale, meta_b.scale
    if (a.vmin, a.vmax) != (b.vmin, b.vmax):
        raise BadInput(
            f"{run_a.source} is drawn on {a.vmin:g}-{a.vmax:g} ({a.label}), {run_b.source} on {b.vmin:g}-{b.vmax:g} "
            f"({b.label}): a difference needs one scale"
        )


def _compare_note(comparison: Comparison) -> str:
    """The line under a comparison: which test outlined the cells of B − A, or why no cell could be tested, and the
    overall paired result."""
    overall = comparison.overall
    tail = f"; over all {overall.n_pairs} pairs, {comparison.test} p = {overall.p_value:.2g}" if overall else ""
    if comparison.cells_too_small:
        n = comparison.max_cell_pairs
        return (f"B − A: no cell can reach p < {ALPHA:g} with {n} pairs per cell (smallest exact p "
                f"{smallest_exact_p(n):.2g}){tail}")
    marked = len(comparison.significant_cells)
    return (f"B − A: outlined {marked} of {comparison.n_tested} tested cells with p < {ALPHA:g}, {comparison.test} "
            f"per cell (uncorrected){tail}")


def _compare_suffix(run_a: RunData, meta_a: FigureMeta, run_b: RunData, meta_b: FigureMeta) -> str:
    """What follows `-vs-` in a comparison's file name: B's own stem, or its directory when the stems agree (the
    usual case: one model with and without YaRN)."""
    if meta_b.stem != meta_a.stem:
        return meta_b.stem
    name_a, name_b = slugify(run_a.run_dir.resolve().name), slugify(run_b.run_dir.resolve().name)
    return name_b if name_b != name_a else "b"


def _labels(run_a: RunData, meta_a: FigureMeta, run_b: RunData, meta_b: FigureMeta) -> tuple[str, str]:
    same_model = meta_a.model_name == meta_b.model_name  # the title already names it
    label_a, label_b = run_label(run_a, meta_a, not same_model), run_label(run_b, meta_b, not same_model)
    if label_a == label_b or not label_a or not label_b:  # two runs of one configuration: their directories tell them apart
        label_a, label_b = run_a.run_dir.resolve().name, run_b.run_dir.resolve().name
    return label_a, label_b


def plot_runs(runs: Sequence[Path], options: PlotOptions) -> PlotReport:
    """Draw one README figure per run (or one comparison per run against `options.compare`)."""
    _check_options(runs, options)
    loaded = [_load(r, options) for r in runs]
    run_b = _load(options.compare, options) if options.compare is not None else None
    warnings: list[str] = [w for run in loaded + ([run_b] if run_b else []) for w in run.warnings]
    rng = np.random.default_rng(options.seed)

    jobs = []  # (run, meta, stem, compare text, comparison) decided up front
    for run in loaded:
        if run_b is None:
            meta = figure_meta(run, options.model_name, options.title, score_label=options.score_label)
            jobs.append((run, meta, meta.stem, None, None))
            continue
        longest = max(run.grid.max_length, run_b.grid.max_length)
        meta = figure_meta(run, options.model_name, options.title, max_length=longest, score_label=options.score_label)
        meta_b = figure_meta(run_b, options.model_name, max_length=longest, score_label=options.score_label)
        _check_scales(run, meta, run_b, meta_b)
        label_a, label_b = _labels(run, meta, run_b, meta_b)
        if meta.scorer != meta_b.scorer:
            warnings.append(f"comparing different scorers ({meta.scorer} vs {meta_b.scorer}): the difference mixes scales")
        comparison = compare_runs(run, run_b, rng)
        text = CompareText(
            title=options.title
            or f'Pressure Testing {meta.model_name} {meta.tag.upper()} via "Needle In A HayStack": {label_a} vs {label_b}',
            label_a=label_a,
            label_b=label_b,
            score_label=meta.score_label,
            native_context=meta.native_context or meta_b.native_context,
            scale=meta.scale,
            significant=comparison.significant_cells,
            note=_compare_note(comparison),
        )
        jobs.append((run, meta, f"{meta.stem}-vs-{_compare_suffix(run, meta, run_b, meta_b)}", text, comparison))

    stems: dict[str, Path] = {}
    for run, _, stem, _, _ in jobs:
        if stem in stems:
            raise BadInput(
                f"{stems[stem]} and {run.source} would both be written as {stem}: plot them one at a time with "
                "--model-name or --out"
            )
        stems[stem] = run.source

    results = []
    missing_font = False
    for run, meta, stem, text, comparison in jobs:
        out = options.out_dir / stem
        summary = summarize(run.grid, run.records, rng, per_probe=run.trials)
        if text is None:
            rendered = render_readme_figure(run.grid, meta, out, options.extras, options.formats, options.dpi)
            results.append(PlotResult(source=run.source, meta=meta, summary=summary, paths=rendered.paths,
                                      format=run.format))
        else:
            rendered = render_compare_figure(run.grid, run_b.grid, text, out, options.extras, options.formats, options.dpi)
            results.append(
                PlotResult(
                    source=run.source, meta=meta, summary=summary, paths=rendered.paths,
                    label=text.label_a, compare_source=run_b.source, compare_label=text.label_b,
                    compare_summary=summarize(run_b.grid, run_b.records, rng, per_probe=run_b.trials),
                    format=run.format, compare_format=run_b.format, comparison=comparison,
                )
            )
        missing_font = missing_font or rendered.missing_hangul
    if missing_font:
        warnings.append(_NO_HANGUL_FONT)  # once, however many figures lacked it
    return PlotReport(results=tuple(results), warnings=tuple(warnings))
