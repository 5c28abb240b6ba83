"""Draw the Kanana README needle-in-a-haystack heatmap, and a side-by-side/difference figure for two runs.

Usage: render_readme_figure(grid, meta, Path("plots/x-niah-qaform-32k.png"))

The README look (NIAH.md): 17.5 x 8 inches at 100 dpi, bold title plus subtitle, depths as rows (0% at the top),
lengths as columns with labels rotated 45 degrees, gkamradt's red-yellow-green colormap, colour bar 0-10, no cell
borders. Scores are stored as shares of their scale and drawn on it (`ScoreScale`: ours x10 on 0-10, a judge's
1-10 grades as they are). Missing cells are hatched grey, never a colour of the scale. `--annotate` writes each
cell's mean, and with repeats its n (binary scores: hits/n and the Wilson interval's half-width), sized to stay
legible on the 32 x 15 grid.
matplotlib and seaborn are imported inside the functions so `import kanana_longctx.cli` stays cheap, and figures
are built with `matplotlib.figure.Figure` (no pyplot): nothing global is touched but the font manager.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

import numpy as np

from kanana_longctx.atomic import atomic_write_bytes
from kanana_longctx.plot.fonts import figure_fonts
from kanana_longctx.plot.grid import Grid, align, depth_key, depth_labels, length_labels
from kanana_longctx.plot.meta import FigureMeta
from kanana_longctx.plot.scale import ScoreScale
from kanana_longctx.stats import wilson_interval

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

README_FIGSIZE = (17.5, 8.0)
COMPARE_FIGSIZE = (28.0, 8.5)
README_COLORS = ("#F0496E", "#EBB839", "#0CD79F")  # the colormap of the README figures (and of gkamradt's tool)
DIFF_COLORS = ("#F0496E", "#F7F7F7", "#0CD79F")  # B worse -> red, equal -> white, B better -> green
MARK_COLOR = "#111111"
MISSING_FACE = "#D9D9D9"
MISSING_HATCH = "#8C8C8C"
FORMATS = ("png", "svg", "pdf")


@dataclass(frozen=True)
class Extras:
    """What the figure adds beyond the README. The default is the README figure plus the native-context line."""

    annotate: bool = False  # write each cell's mean (and, with repeats, its n and interval)
    mean_line: bool = False  # per-length mean on a secondary axis
    native_line: bool = True  # dashed line at YaRN's original context, when the run used YaRN


@dataclass(frozen=True)
class Rendered:
    paths: tuple[Path, ...]
    missing_hangul: bool  # some text has Hangul but no Hangul font was found (drawn as boxes; the caller warns)
    # Heatmap panels in image pixels (left, top, right, bottom), as saved at the given dpi: lets tests and users
    # find a cell in the PNG without guessing the layout.
    panels: tuple[tuple[float, float, float, float], ...]


def readme_cmap():
    from matplotlib.colors import LinearSegmentedColormap

    return LinearSegmentedColormap.from_list("custom_cmap", list(README_COLORS))


def _fmt(values: np.ndarray, vmax: float) -> str:
    finite = values[np.isfinite(values)]
    if np.allclose(finite, np.round(finite)):
        return ".0f"
    return ".2f" if vmax <= 1 else ".1f"


def _cell_texts(grid: Grid, drawn: np.ndarray, span: float, detail: bool) -> dict[tuple[int, int], str]:
    """(row, col) -> the text of a finished cell: its mean, then with repeats `hits/n` and `±half-width` of the
    Wilson interval (binary scores) or `n=N` (others). `span` converts shares to drawn units."""
    fmt = _fmt(drawn, span)
    texts = {}
    for i, j in zip(*np.nonzero(grid.counts > 0)):
        lines = [format(drawn[i, j], fmt)]
        n = int(grid.counts[i, j])
        if detail and n > 1:
            if grid.hits is not None:
                k = int(grid.hits[i, j])
                interval = wilson_interval(k, n)
                lines += [f"{k}/{n}", f"±{interval.half_width * span:{'.2f' if span <= 1 else '.1f'}}"]
            else:
                lines.append(f"n={n}")
        texts[(int(i), int(j))] = "\n".join(lines)
    return texts


def _annotate(ax: "Axes", grid: Grid, drawn: np.ndarray, texts: dict, cmap, vmin: float, vmax: float) -> None:
    """Write `texts` in their cells, dark on light colours and light on dark ones (seaborn's rule)."""
    from matplotlib.colors import Normalize, to_rgb

    norm = Normalize(vmin=vmin, vmax=vmax)
    lines = max((t.count("\n") + 1 for t in texts.values()), default=1)
    dense = len(grid.lengths) > 24 or len(grid.depths) > 12
    size = (7 if dense else 9) if lines == 1 else (7 if dense else 8)
    for (i, j), text in texts.items():
        r, g, b = to_rgb(cmap(norm(drawn[i, j])))
        luminance = 0.2126 * r + 0.7152 * g + 0.0722 * b
        ax.text(j + 0.5, i + 0.5, text, ha="center", va="center", fontsize=size, linespacing=1.0,
                color="#262626" if luminance > 0.408 else "white", zorder=4)


def _draw_missing_background(ax: "Axes", grid: Grid) -> None:
    # seaborn leaves NaN cells unpainted, so a hatched rectangle under the mesh shows exactly through them.
    from matplotlib.patches import Rectangle

    ax.add_patch(
        Rectangle(
            (0, 0), len(grid.lengths), len(grid.depths), facecolor=MISSING_FACE, edgecolor=MISSING_HATCH,
            hatch="///", linewidth=0, zorder=0,
        )
    )


def _missing_legend(ax: "Axes", n_missing: int) -> None:
    from matplotlib.patches import Patch

    handle = Patch(facecolor=MISSING_FACE, edgecolor=MISSING_HATCH, hatch="///", label=f"no result ({n_missing} cells)")
    ax.legend(
        handles=[handle], loc="lower right", bbox_to_anchor=(1.0, 1.005), frameon=False, fontsize=10,
        borderaxespad=0.0, handlelength=1.6, handleheight=1.2,
    )


def _draw_heatmap(
    ax: "Axes", grid: Grid, values: np.ndarray, *, cmap, vmin: float, vmax: float, cbar_kws: dict | None,
    cbar_ax: "Axes | None" = None, annotate: bool = False, show_ylabels: bool = True, detail: bool = True,
    span: float = 10.0,
) -> None:
    """Draw `values` (drawn units); `annotate` writes cell texts, with repeats' n and intervals when `detail`."""
    import seaborn as sns

    sns.heatmap(
        values, ax=ax, cmap=cmap, vmin=vmin, vmax=vmax, cbar=cbar_kws is not None or cbar_ax is not None,
        cbar_ax=cbar_ax, cbar_kws=cbar_kws or {}, xticklabels=length_labels(grid.lengths),
        yticklabels=depth_labels(grid.depths) if show_ylabels else False,
    )
    if annotate:
        _annotate(ax, grid, values, _cell_texts(grid, values, span, detail), cmap, vmin, vmax)
    _draw_missing_background(ax, grid)
    ax.set_xlabel("Context Length (# Tokens)", fontsize=12)
    ax.set_ylabel("Document Depth (%)" if show_ylabels else "", fontsize=12)
    ax.tick_params(axis="x", labelrotation=45)
    ax.tick_params(axis="y", labelrotation=0)


def _native_x(grid: Grid, native: int | None) -> float | None:
    """The column boundary after the last length within the native context (None when every tested length is on
    one side of it). A boundary, not an interpolated point: a 4000 column is inside a 4096 context, whole."""
    if native is None:
        return None
    inside = sum(1 for length in grid.lengths if length <= native)
    return float(inside) if 0 < inside < len(grid.lengths) else None


def _draw_native_line(ax: "Axes", grid: Grid, native: int | None) -> None:
    x = _native_x(grid, native)
    if x is None:
        return
    ax.axvline(x, color="#222222", linestyle="--", linewidth=2.0, zorder=5)
    ax.text(
        x, 1.005, f"native context {native:,}", transform=ax.get_xaxis_transform(), ha="center", va="bottom",
        fontsize=10, color="#222222",
    )


def _draw_mean_line(ax: "Axes", grid: Grid, scale: ScoreScale) -> None:
    # Drawn on the heatmap's own axes (row 0 at the top = a perfect score) with a secondary axis for the scale: a
    # twin axes would fight the layout engine for the space the colour bar already took.
    n, lo, hi = len(grid.depths), scale.vmin, scale.vmax
    means = scale.drawn(grid.length_means())
    centres = np.arange(len(grid.lengths)) + 0.5
    ax.plot(centres, n * (1.0 - (means - lo) / (hi - lo)), color="#222222", linewidth=2.0, marker="o", markersize=5,
            markerfacecolor="white", zorder=6, clip_on=False, label="mean per length")  # a perfect score sits on the top edge
    secondary = ax.secondary_yaxis(
        "right", functions=(lambda y: lo + (hi - lo) * (1.0 - y / n), lambda s: n * (1.0 - (s - lo) / (hi - lo)))
    )
    times = f" (×{scale.draw_factor:g})" if scale.draw_factor != 1 else ""
    secondary.set_ylabel(f"Mean score per length{times}", fontsize=11)


def _finish_and_measure(fig: "Figure", axes: Sequence["Axes"]):
    fig.draw_without_rendering()  # settle the layout so the panel boxes are where the saved image will have them
    height = fig.get_figheight() * fig.dpi
    boxes = []
    for ax in axes:
        bb = ax.get_window_extent()
        boxes.append((float(bb.x0), float(height - bb.y1), float(bb.x1), float(height - bb.y0)))
    return tuple(boxes)


def build_readme_figure(grid: Grid, meta: FigureMeta, extras: Extras = Extras(), dpi: int = 100):
    """The README figure for one run; returns (Figure, panel boxes in pixels)."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=README_FIGSIZE, dpi=dpi, layout="constrained")
    ax = fig.add_subplot(1, 1, 1)
    scale = meta.scale
    cbar_kws = {"label": meta.score_label, "pad": 0.02}
    _draw_heatmap(
        ax, grid, scale.drawn(grid.mean), cmap=readme_cmap(), vmin=scale.vmin, vmax=scale.vmax, cbar_kws=cbar_kws,
        annotate=extras.annotate, span=scale.vmax - scale.vmin,
    )
    fig.axes[-1].yaxis.label.set_size(12)  # the colour bar's label
    if extras.native_line:
        _draw_native_line(ax, grid, meta.native_context)
    if extras.mean_line:
        _draw_mean_line(ax, grid, scale)
    if grid.n_missing:
        _missing_legend(ax, grid.n_missing)
    fig.suptitle(meta.title, fontsize=18, fontweight="bold")
    # Room above the heatmap only when the native-context label or the missing-cells legend sits there.
    crowded = grid.n_missing or (extras.native_line and _native_x(grid, meta.native_context) is not None)
    ax.set_title(meta.subtitle, fontsize=14, pad=24 if crowded else 10)
    return fig, _finish_and_measure(fig, [ax])


@dataclass(frozen=True)
class CompareText:
    """The words of a comparison figure (the two runs may differ in YaRN, so the native context is passed here),
    and the cells the paired test marks on the difference panel."""

    title: str
    label_a: str
    label_b: str
    score_label: str
    native_context: int | None = None
    scale: ScoreScale | None = None  # both panels' scale; None: ours (0-1 drawn x10) under `score_label`
    significant: frozenset[tuple[int, float]] = frozenset()  # (length, depth key) cells outlined on B − A
    note: str = ""  # under the panels: which test marked the outlined cells, or why no cell could be tested

    @property
    def panel_scale(self) -> ScoreScale:
        if self.scale is None:
            return ScoreScale(0.0, 1.0, self.score_label, draw_factor=10.0)
        return self.scale


def _draw_marks(ax: "Axes", grid: Grid, cells: frozenset[tuple[int, float]]) -> None:
    """Outline the cells the paired test marked on the difference panel."""
    from matplotlib.patches import Rectangle

    rows = {depth_key(d): i for i, d in enumerate(grid.depths)}
    cols = {length: j for j, length in enumerate(grid.lengths)}
    for length, depth in sorted(cells):
        if length in cols and depth_key(depth) in rows:
            ax.add_patch(Rectangle((cols[length], rows[depth_key(depth)]), 1, 1, fill=False, edgecolor=MARK_COLOR,
                                   linewidth=2.2, zorder=7, clip_on=False))


def build_compare_figure(grid_a: Grid, grid_b: Grid, text: CompareText, extras: Extras = Extras(), dpi: int = 100):
    """A and B side by side on one colour scale, then B - A on a diverging scale; returns (Figure, boxes)."""
    from matplotlib.colors import LinearSegmentedColormap
    from matplotlib.figure import Figure

    a, b = align(grid_a, grid_b)
    scale = text.panel_scale
    span = scale.vmax - scale.vmin
    fig = Figure(figsize=COMPARE_FIGSIZE, dpi=dpi, layout="constrained")
    spec = fig.add_gridspec(1, 6, width_ratios=[1.0, 1.0, 0.035, 0.06, 1.0, 0.035], wspace=0.04)
    ax_a, ax_b, cax = fig.add_subplot(spec[0, 0]), fig.add_subplot(spec[0, 1]), fig.add_subplot(spec[0, 2])
    ax_d, cax_d = fig.add_subplot(spec[0, 4]), fig.add_subplot(spec[0, 5])
    fig.add_subplot(spec[0, 3]).set_visible(False)  # a spacer, so the difference panel's labels clear the bar
    cmap = readme_cmap()
    # Three panels share the width: a 32-column panel has room for a cell's mean, not for its n and interval.
    detail = len(a.lengths) <= 16
    common = dict(cmap=cmap, vmin=scale.vmin, vmax=scale.vmax, annotate=extras.annotate, span=span, detail=detail)
    _draw_heatmap(ax_a, a, scale.drawn(a.mean), cbar_kws=None, **common)
    _draw_heatmap(ax_b, b, scale.drawn(b.mean), cbar_kws={"label": text.score_label}, cbar_ax=cax,
                  show_ylabels=False, **common)
    diff = (b.mean - a.mean) * span  # NaN where either run lacks the cell
    both = Grid(lengths=a.lengths, depths=a.depths, mean=diff, counts=np.minimum(a.counts, b.counts))
    times = f", ×{scale.draw_factor:g}" if scale.draw_factor != 1 else ""
    _draw_heatmap(
        ax_d, both, diff, cmap=LinearSegmentedColormap.from_list("diff_cmap", list(DIFF_COLORS)), vmin=-span,
        vmax=span, cbar_kws={"label": f"Score difference, B − A{times}", "ticks": list(np.linspace(-span, span, 5))},
        cbar_ax=cax_d, annotate=extras.annotate, detail=False, span=span,
    )
    _draw_marks(ax_d, both, text.significant)
    if text.note:
        fig.supxlabel(text.note, fontsize=12)
    for ax, grid, name in ((ax_a, a, f"A: {text.label_a}"), (ax_b, b, f"B: {text.label_b}"), (ax_d, both, "B − A")):
        ax.set_title(name, fontsize=14, pad=24)
        if extras.native_line:
            _draw_native_line(ax, grid, text.native_context)
        if grid.n_missing:
            _missing_legend(ax, grid.n_missing)
    fig.suptitle(text.title, fontsize=18, fontweight="bold")
    return fig, _finish_and_measure(fig, [ax_a, ax_b, ax_d])


def save_figure(fig: "Figure", stem_path: Path, formats: Sequence[str] = ("png",), dpi: int = 100) -> tuple[Path, ...]:
    """Write `stem_path.<fmt>` for each format, each atomically (a reader never sees half a PNG)."""
    stem_path.parent.mkdir(parents=True, exist_ok=True)
    paths = []
    for fmt in formats:
        path = stem_path.with_name(f"{stem_path.name}.{fmt}")
        buffer = io.BytesIO()
        # No bbox_inches="tight": it would change the pixel size the README figures are known by.
        fig.savefig(buffer, format=fmt, dpi=dpi)
        atomic_write_bytes(path, buffer.getvalue())
        paths.append(path)
    return tuple(paths)


def render_readme_figure(
    grid: Grid, meta: FigureMeta, out_path: Path, extras: Extras = Extras(), formats: Sequence[str] = ("png",),
    dpi: int = 100,
) -> Rendered:
    """Build and save the README figure; `out_path` is the file stem (any suffix is replaced per format)."""
    with figure_fonts((meta.title, meta.subtitle)) as missing_hangul:
        fig, boxes = build_readme_figure(grid, meta, extras, dpi=dpi)
        paths = save_figure(fig, _stem(out_path), formats, dpi)
    return Rendered(paths=paths, missing_hangul=missing_hangul, panels=boxes)


def render_compare_figure(
    grid_a: Grid, grid_b: Grid, text: CompareText, out_path: Path, extras: Extras = Extras(),
    formats: Sequence[str] = ("png",), dpi: int = 100,
) -> Rendered:
    with figure_fonts((text.title, text.label_a, text.label_b)) as missing_hangul:
        fig, boxes = build_compare_figure(grid_a, grid_b, text, extras, dpi=dpi)
        paths = save_figure(fig, _stem(out_path), formats, dpi)
    return Rendered(paths=paths, missing_hangul=missing_hangul, panels=boxes)


def _stem(path: Path) -> Path:
    path = Path(path)
    return path.with_suffix("") if path.suffix.lower().lstrip(".") in FORMATS else path
