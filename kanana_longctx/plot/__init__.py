"""README heatmaps for needle-in-a-haystack runs (pure: numpy, matplotlib and seaborn; no torch).

Usage: from kanana_longctx.plot import plot_runs, PlotOptions; plot_runs([Path("runs/x")], PlotOptions())

Modules: `grid` (rows -> depth x length means, NaN for missing), `meta` (run loading, titles, file names),
`summary` (mean overall / per length / per depth band), `heatmap` (the figures), `fonts` (Hangul), `make` (the
one call the CLI makes). matplotlib and seaborn are imported only when a figure is drawn.
"""

from kanana_longctx.plot.grid import Grid, aggregate, align
from kanana_longctx.plot.heatmap import CompareText, Extras, Rendered, render_compare_figure, render_readme_figure
from kanana_longctx.plot.make import PlotOptions, PlotReport, PlotResult, parse_formats, plot_runs
from kanana_longctx.plot.meta import FigureMeta, RunData, display_model_name, figure_meta, load_run
from kanana_longctx.plot.summary import Summary, summarize

__all__ = [
    "CompareText",
    "Extras",
    "FigureMeta",
    "Grid",
    "PlotOptions",
    "PlotReport",
    "PlotResult",
    "Rendered",
    "RunData",
    "Summary",
    "aggregate",
    "align",
    "display_model_name",
    "figure_meta",
    "load_run",
    "parse_formats",
    "plot_runs",
    "render_compare_figure",
    "render_readme_figure",
    "summarize",
]
