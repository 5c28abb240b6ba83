"""`kanana-longctx plot`: draw the Kanana README heatmap of NIAH results and print their summary tables.

Usage: kanana-longctx plot runs/kanana-8b-128k [--out plots] [--compare runs/kanana-8b-128k-noyarn]

Thin shell: parse options, call `kanana_longctx.plot.plot_runs`, render its report with rich. The plotting library
(numpy, scipy, matplotlib, seaborn) is imported inside the command so `kanana-longctx --help` stays fast.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, List, Optional

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from kanana_longctx.cli import app
from kanana_longctx.cli.errors import friendly_errors, stderr
from kanana_longctx.cli.options import OutDirOpt

if TYPE_CHECKING:
    from kanana_longctx.plot.compare import Comparison
    from kanana_longctx.plot.make import PlotResult
    from kanana_longctx.plot.scale import ScoreScale
    from kanana_longctx.plot.summary import Row, Summary

stdout = Console(highlight=False, soft_wrap=True, markup=False)  # paths may hold [brackets]

# The names --format-in takes; kept here so that `--help` needs no import of the plotting library (a test checks
# they match the readers' registry).
FORMAT_NAMES = ("kanana", "gkamradt-v2", "evalscope", "needlebench", "gkamradt", "table")


def _score(scale: "ScoreScale", share: float) -> str:
    return "-" if math.isnan(share) else scale.format(scale.native(share))


def _delta(scale: "ScoreScale", a: float, b: float) -> str:
    return "-" if math.isnan(a) or math.isnan(b) else scale.format_difference((b - a) * scale.span)


def _interval(scale: "ScoreScale", low: float, high: float) -> str:
    if math.isnan(low):
        return "-"
    return f"{scale.format(scale.native(low))}-{scale.format(scale.native(high))}"


def _headline(label: str, summary: "Summary", scale: "ScoreScale") -> str:
    on = "" if (scale.lo, scale.hi) == (0.0, 1.0) else f" (scale {scale.range_text})"
    text = (
        f"{label}mean score {_score(scale, summary.overall)}{on} over {summary.n_filled}/{summary.n_cells} cells "
        f"({summary.n_probes} probes, {summary.repeats_text} per cell"
        + (f", {summary.n_missing} cells with no result" if summary.n_missing else "")
        + ")"
    )
    if summary.interval_method:
        hits = f", {summary.hits}/{summary.n_probes} probes scored 1" if summary.hits is not None else ""
        text += f"; 95% CI {_interval(scale, summary.interval.low, summary.interval.high)} ({summary.interval_method}{hits})"
    return text


def _rows_table(
    title: str, key: str, scale: "ScoreScale", rows_a: "tuple[Row, ...]", rows_b: "tuple[Row, ...] | None"
) -> Table:
    table = Table(title=title, title_justify="left", show_edge=False, pad_edge=False)
    table.add_column(key, justify="right")
    if rows_b is None:
        with_ci = any(not math.isnan(r.interval.low) for r in rows_a)
        with_hits = any(r.hits is not None for r in rows_a)
        for name in ["mean"] + (["95% CI"] if with_ci else []) + (["scored 1"] if with_hits else []) + ["cells",
                                                                                                      "probes"]:
            table.add_column(name, justify="right")
        for row in rows_a:
            cells = [row.label, _score(scale, row.mean)]
            cells += [_interval(scale, row.interval.low, row.interval.high)] if with_ci else []
            cells += [f"{row.hits}/{row.probes}" if row.hits is not None else "-"] if with_hits else []
            table.add_row(*cells, f"{row.cells}/{row.planned}", str(row.probes))
        return table
    by_label_a, by_label_b = {r.label: r for r in rows_a}, {r.label: r for r in rows_b}
    for name in ("A", "B", "B − A", "cells A", "cells B"):
        table.add_column(name, justify="right")
    # Labels are lengths ("32000") or bands ("20-40%"): both sort by their leading number.
    for label in sorted(by_label_a.keys() | by_label_b.keys(), key=lambda s: float(s.split("-")[0])):
        a, b = by_label_a.get(label), by_label_b.get(label)
        mean_a, mean_b = (a.mean if a else math.nan), (b.mean if b else math.nan)
        table.add_row(
            label, _score(scale, mean_a), _score(scale, mean_b), _delta(scale, mean_a, mean_b),
            f"{a.cells}/{a.planned}" if a else "-", f"{b.cells}/{b.planned}" if b else "-",
        )
    return table


def _outcome_table(summary: "Summary", other: "Summary | None") -> Table | None:
    if not summary.outcomes and not (other and other.outcomes):
        return None
    table = Table(title="failure classes", title_justify="left", show_edge=False, pad_edge=False)
    table.add_column("outcome")
    runs = [("", summary)] if other is None else [("A ", summary), ("B ", other)]
    for prefix, _ in runs:
        table.add_column(f"{prefix}probes", justify="right")
        table.add_column(f"{prefix}share", justify="right")
    names = list(dict.fromkeys([o.outcome for _, s in runs for o in s.outcomes]))
    for name in names:
        cells = [name]
        for _, s in runs:
            row = next((o for o in s.outcomes if o.outcome == name), None)
            cells += [str(row.probes), f"{row.share:.1%}"] if row else ["0", "-"]
        table.add_row(*cells)
    return table


def _paired_lines(comparison: "Comparison", scale: "ScoreScale") -> list[str]:
    overall = comparison.overall
    if overall is None:
        return ["paired: no probe is in both runs, nothing to test"]
    lines = [f"paired: {overall.n_pairs} probes in both runs"
             + (f" ({comparison.unpaired_a} only in A, {comparison.unpaired_b} only in B)"
                if comparison.unpaired_a or comparison.unpaired_b else "")]
    if overall.test.startswith("McNemar"):
        counts = f"b = {overall.a_only} (A right, B wrong), c = {overall.b_only} (B right, A wrong)"
    else:
        counts = f"{overall.a_only} pairs A higher, {overall.b_only} pairs B higher"
    lines.append(f"{overall.test}: {counts}, p = {overall.p_value:.3g}")
    low, high = overall.interval.low * scale.span, overall.interval.high * scale.span
    ci = "-" if math.isnan(low) else f"{scale.format_difference(low)} to {scale.format_difference(high)}"
    lines.append(
        f"mean difference B − A: {scale.format_difference(overall.mean_difference * scale.span)} "
        f"(95% CI {ci}, bootstrap over pairs)"
    )
    lines.append(f"per cell: {comparison.cell_note()}")
    return lines


def _print_result(result: "PlotResult") -> None:
    for path in result.paths:
        stdout.print(f"wrote {path}")
    scale = result.meta.scale
    if result.compare_summary is None:
        stdout.print(_headline("", result.summary, scale))
    else:
        stdout.print(_headline(f"A ({result.label}, {result.source}): ", result.summary, scale))
        stdout.print(_headline(f"B ({result.compare_label}, {result.compare_source}): ", result.compare_summary, scale))
        stdout.print(f"B − A: {_delta(scale, result.summary.overall, result.compare_summary.overall)}")
        if result.comparison is not None:
            for line in _paired_lines(result.comparison, scale):
                stdout.print(line)
    rows_b = result.compare_summary
    stdout.print(
        _rows_table("per length", "length", scale, result.summary.per_length, rows_b.per_length if rows_b else None)
    )
    stdout.print(
        _rows_table("per depth band", "depth", scale, result.summary.per_band, rows_b.per_band if rows_b else None)
    )
    outcomes = _outcome_table(result.summary, rows_b)
    if outcomes is not None:
        stdout.print(outcomes)


@app.command("plot")
@friendly_errors
def plot(
    runs: Annotated[
        List[Path],
        typer.Argument(
            metavar="RUN",
            help="Run directories or results.jsonl files; or gkamradt, EvalScope, NeedleBench results or a "
            "CSV/JSONL table.",
            show_default=False,
        ),
    ],
    out: OutDirOpt = Path("plots"),
    compare: Annotated[
        Optional[Path],
        typer.Option("--compare", "-c", help="RUN_B: draw each RUN beside it, plus the difference B − A."),
    ] = None,
    title: Annotated[Optional[str], typer.Option("--title", help="Replace the figure's title.")] = None,
    model_name: Annotated[
        Optional[str], typer.Option("--model-name", "-m", help="Model name for the title and file name.")
    ] = None,
    formats: Annotated[
        str, typer.Option("--format", "-f", help="Comma-separated output formats: png, svg, pdf.")
    ] = "png",
    dpi: Annotated[int, typer.Option("--dpi", help="Resolution; 100 gives the README's 1750x800 px.")] = 100,
    annotate: Annotated[
        bool, typer.Option("--annotate", help="Write each cell's mean (with repeats: n, interval) in it.")
    ] = False,
    mean_line: Annotated[
        bool, typer.Option("--mean-line", help="Overlay the mean score per length (right-hand scale).")
    ] = False,
    native_line: Annotated[
        bool,
        typer.Option(
            "--native-line/--no-native-line",
            help="Dashed line at the native context length when the run used YaRN.",
        ),
    ] = True,
    format_in: Annotated[
        Optional[str],
        typer.Option("--format-in", help=f"Read RUNs as: {', '.join(FORMAT_NAMES)} (default: detect)."),
    ] = None,
    score_label: Annotated[
        Optional[str], typer.Option("--score-label", help="Colour-bar label (default: the source's own).")
    ] = None,
    task: Annotated[
        Optional[str], typer.Option("--task", help="Plot this task's rows (needed when a RUN mixes tasks).")
    ] = None,
    lang: Annotated[
        Optional[str], typer.Option("--lang", help="Plot this language's rows (needed when a RUN mixes them).")
    ] = None,
    seed: Annotated[int, typer.Option("--seed", help="Seed of the resampling tests and bootstrap intervals.")] = 0,
) -> None:
    """Draw the Kanana README needle-in-a-haystack heatmap of each RUN and print its summary.

    Our scores (0-1) are drawn x10 on the README's 0-10 colour bar; other
    tools' scores keep their own scale and label (gkamradt's judge: "ChatGPT
    Score", 0-10). Cells with no result are hatched grey, never scored as 0;
    repeats of a cell are averaged, with 95% intervals in the summary.
    --compare pairs the probes of both runs and marks the cells that differ
    (McNemar exact; a sign-flip test for fractional scores).

    [bold]Examples[/]

      kanana-longctx plot runs/kanana-8b-32k

      kanana-longctx plot runs/a/results.jsonl --out docs/img --format png,svg

      kanana-longctx plot runs/noyarn --compare runs/yarn --annotate

      kanana-longctx plot LLMTest_NeedleInAHaystack/results -m Kanana-1.5-8B
    """
    from kanana_longctx.plot.heatmap import Extras
    from kanana_longctx.plot.make import PlotOptions, parse_formats, plot_runs

    options = PlotOptions(
        out_dir=out,
        formats=parse_formats(formats),
        dpi=dpi,
        title=title,
        model_name=model_name,
        compare=compare,
        extras=Extras(annotate=annotate, mean_line=mean_line, native_line=native_line),
        format_in=format_in,
        score_label=score_label,
        task=task,
        lang=lang,
        seed=seed,
    )
    report = plot_runs(runs, options)
    for warning in report.warnings:
        stderr.print(f"[yellow]warning:[/] {escape(warning)}", markup=True, highlight=False)
    read = {}
    for result in report.results:
        read.setdefault(result.source, result.format)
        if result.compare_source is not None:
            read.setdefault(result.compare_source, result.compare_format)
    for source, name in read.items():
        stdout.print(f"read {source} as {name}")
    for result in report.results:
        _print_result(result)
