"""`kanana-longctx plot`: draw the Kanana README heatmap of a NIAH run and print its summary table.

Usage: kanana-longctx plot runs/kanana-8b-128k [--out plots] [--compare runs/kanana-8b-128k-noyarn]

Thin shell: parse options, call `kanana_longctx.plot.plot_runs`, render its report with rich. The plotting library
(numpy, matplotlib, seaborn) is imported inside the command so `kanana-longctx --help` stays fast.
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
    from kanana_longctx.plot.make import PlotResult
    from kanana_longctx.plot.summary import Row

stdout = Console(highlight=False, soft_wrap=True, markup=False)  # paths may hold [brackets]


def _score(x: float) -> str:
    return "-" if math.isnan(x) else f"{x:.3f}"


def _delta(a: float, b: float) -> str:
    return "-" if math.isnan(a) or math.isnan(b) else f"{b - a:+.3f}"


def _headline(label: str, summary) -> str:
    return (
        f"{label}mean score {_score(summary.overall)} over {summary.n_filled}/{summary.n_cells} cells "
        f"({summary.n_probes} probes, {summary.repeats_text} per cell"
        + (f", {summary.n_missing} cells with no result" if summary.n_missing else "")
        + ")"
    )


def _rows_table(title: str, key: str, rows_a: "tuple[Row, ...]", rows_b: "tuple[Row, ...] | None") -> Table:
    table = Table(title=title, title_justify="left", show_edge=False, pad_edge=False)
    table.add_column(key, justify="right")
    if rows_b is None:
        table.add_column("mean", justify="right")
        table.add_column("cells", justify="right")
        table.add_column("probes", justify="right")
        for row in rows_a:
            table.add_row(row.label, _score(row.mean), f"{row.cells}/{row.planned}", str(row.probes))
        return table
    by_label_a, by_label_b = {r.label: r for r in rows_a}, {r.label: r for r in rows_b}
    for name in ("A", "B", "B − A", "cells A", "cells B"):
        table.add_column(name, justify="right")
    # Labels are lengths ("32000") or bands ("20-40%"): both sort by their leading number.
    for label in sorted(by_label_a.keys() | by_label_b.keys(), key=lambda s: float(s.split("-")[0])):
        a, b = by_label_a.get(label), by_label_b.get(label)
        mean_a, mean_b = (a.mean if a else math.nan), (b.mean if b else math.nan)
        table.add_row(
            label, _score(mean_a), _score(mean_b), _delta(mean_a, mean_b),
            f"{a.cells}/{a.planned}" if a else "-", f"{b.cells}/{b.planned}" if b else "-",
        )
    return table


def _print_result(result: "PlotResult") -> None:
    for path in result.paths:
        stdout.print(f"wrote {path}")
    if result.compare_summary is None:
        stdout.print(_headline("", result.summary))
    else:
        stdout.print(_headline(f"A ({result.label}, {result.source}): ", result.summary))
        stdout.print(_headline(f"B ({result.compare_label}, {result.compare_source}): ", result.compare_summary))
        stdout.print(f"B − A: {_delta(result.summary.overall, result.compare_summary.overall)}")
    rows_b = result.compare_summary
    stdout.print(
        _rows_table("per length", "length", result.summary.per_length, rows_b.per_length if rows_b else None)
    )
    stdout.print(
        _rows_table("per depth band", "depth", result.summary.per_band, rows_b.per_band if rows_b else None)
    )


@app.command("plot")
@friendly_errors
def plot(
    runs: Annotated[
        List[Path],
        typer.Argument(
            metavar="RUN", help="Run directories (results.jsonl + run.json) or results.jsonl files.",
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
    annotate: Annotated[bool, typer.Option("--annotate", help="Write each cell's score (x10) in it.")] = False,
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
) -> None:
    """Draw the Kanana README needle-in-a-haystack heatmap of each RUN and print its summary.

    Scores (stored in [0, 1]) are drawn x10 on the README's 0-10 colour bar.
    Cells with no result are hatched grey, never scored as 0; repeated probes of one cell are averaged.

    [bold]Examples[/]

      kanana-longctx plot runs/kanana-8b-32k

      kanana-longctx plot runs/a/results.jsonl --out docs/img --format png,svg

      kanana-longctx plot runs/noyarn --compare runs/yarn --annotate
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
    )
    report = plot_runs(runs, options)
    for warning in report.warnings:
        stderr.print(f"[yellow]warning:[/] {escape(warning)}", markup=True, highlight=False)
    for result in report.results:
        _print_result(result)
