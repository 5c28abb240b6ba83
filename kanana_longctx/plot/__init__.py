"""README heatmaps for needle-in-a-haystack results (pure: numpy, scipy, matplotlib and seaborn; no torch).

Usage: from kanana_longctx.plot import plot_runs, PlotOptions; plot_runs([Path("runs/x")], PlotOptions())

Modules: `readers` (our runs and other tools' results -> rows, one module per format), `scale` (a source's score
scale and label), `grid` (rows -> depth x length means, NaN for missing), `meta` (run loading, titles, file names),
`summary` (means and intervals overall / per length / per depth band, failure classes), `compare` (paired tests
of two runs), `heatmap` (the figures), `fonts` (Hangul), `make` (the one call the CLI makes). matplotlib and
seaborn are imported only when a figure is drawn.
"""

from kanana_longctx.plot.compare import Comparison, compare_runs
from kanana_longctx.plot.grid import Grid, aggregate, align
from kanana_longctx.plot.heatmap import CompareText, Extras, Rendered, render_compare_figure, render_readme_figure
from kanana_longctx.plot.make import PlotOptions, PlotReport, PlotResult, parse_formats, plot_runs
from kanana_longctx.plot.meta import FigureMeta, RunData, display_model_name, figure_meta, load_run
from kanana_longctx.plot.readers import FORMAT_NAMES, read_source
from kanana_longctx.plot.scale import ScoreScale
from kanana_longctx.plot.summary import Summary, summarize

__all__ = [
    "FORMAT_NAMES",
    "CompareText",
    "Comparison",
    "Extras",
    "FigureMeta",
    "Grid",
    "PlotOptions",
    "PlotReport",
    "PlotResult",
    "Rendered",
    "RunData",
    "ScoreScale",
    "Summary",
    "aggregate",
    "align",
    "compare_runs",
    "display_model_name",
    "figure_meta",
    "load_run",
    "parse_formats",
    "plot_runs",
    "read_source",
    "render_compare_figure",
    "render_readme_figure",
    "summarize",
]
