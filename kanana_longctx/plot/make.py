"""The one library call behind `kanana-longctx plot`: load runs, draw their figures, summarise them.

Usage: report = plot_runs([Path("runs/a")], PlotOptions(out_dir=Path("plots")))

Every run is loaded and every output name decided before anything is drawn, so a bad RUN or two runs that would
write the same file fail with nothing written. Warnings (a torn last line, no run.json, no Hangul font) are returned,
never printed.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

from kanana_longctx.errors import BadInput
from kanana_longctx.plot.fonts import FONT_ENV
from kanana_longctx.plot.heatmap import FORMATS, CompareText, Extras, render_compare_figure, render_readme_figure
from kanana_longctx.plot.meta import FigureMeta, RunData, figure_meta, load_run, run_label, slugify
from kanana_longctx.plot.summary import Summary, summarize

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


@dataclass(frozen=True)
class PlotResult:
    source: Path  # the results.jsonl read
    meta: FigureMeta
    summary: Summary
    paths: tuple[Path, ...]
    label: str = ""
    compare_source: Path | None = None
    compare_label: str = ""
    compare_summary: Summary | None = None


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
    bad = [f for f in options.formats if f not in FORMATS]
    if bad or not options.formats:
        raise BadInput(f"--format: {', '.join(bad) or 'nothing given'} is not one of {', '.join(FORMATS)}")


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
    loaded = [load_run(Path(r)) for r in runs]
    run_b = load_run(options.compare) if options.compare is not None else None
    warnings: list[str] = [w for run in loaded + ([run_b] if run_b else []) for w in run.warnings]

    jobs = []  # (run, meta, stem, compare text) decided up front
    for run in loaded:
        if run_b is None:
            meta = figure_meta(run, options.model_name, options.title)
            jobs.append((run, meta, meta.stem, None))
            continue
        longest = max(run.grid.max_length, run_b.grid.max_length)
        meta = figure_meta(run, options.model_name, options.title, max_length=longest)
        meta_b = figure_meta(run_b, options.model_name, max_length=longest)
        label_a, label_b = _labels(run, meta, run_b, meta_b)
        if meta.scorer != meta_b.scorer:
            warnings.append(f"comparing different scorers ({meta.scorer} vs {meta_b.scorer}): the difference mixes scales")
        text = CompareText(
            title=options.title
            or f'Pressure Testing {meta.model_name} {meta.tag.upper()} via "Needle In A HayStack": {label_a} vs {label_b}',
            label_a=label_a,
            label_b=label_b,
            score_label=meta.score_label,
            native_context=meta.native_context or meta_b.native_context,
        )
        jobs.append((run, meta, f"{meta.stem}-vs-{_compare_suffix(run, meta, run_b, meta_b)}", text))

    stems: dict[str, Path] = {}
    for run, _, stem, _ in jobs:
        if stem in stems:
            raise BadInput(
                f"{stems[stem]} and {run.source} would both be written as {stem}: plot them one at a time with "
                "--model-name or --out"
            )
        stems[stem] = run.source

    results = []
    missing_font = False
    for run, meta, stem, text in jobs:
        out = options.out_dir / stem
        if text is None:
            rendered = render_readme_figure(run.grid, meta, out, options.extras, options.formats, options.dpi)
            results.append(PlotResult(source=run.source, meta=meta, summary=summarize(run.grid), paths=rendered.paths))
        else:
            rendered = render_compare_figure(run.grid, run_b.grid, text, out, options.extras, options.formats, options.dpi)
            results.append(
                PlotResult(
                    source=run.source, meta=meta, summary=summarize(run.grid), paths=rendered.paths,
                    label=text.label_a, compare_source=run_b.source, compare_label=text.label_b,
                    compare_summary=summarize(run_b.grid),
                )
            )
        missing_font = missing_font or rendered.missing_hangul
    if missing_font:
        warnings.append(_NO_HANGUL_FONT)  # once, however many figures lacked it
    return PlotReport(results=tuple(results), warnings=tuple(warnings))
