"""Aggregate NIAH result rows into the depth x length grid the heatmap draws (pure: numpy only).

Usage: grid = aggregate(records, planned_lengths=..., planned_depths=...); grid.mean[i, j] is depth i, length j.

A cell with no result is NaN, never 0: an unfinished run must not look like a failing model. Repeated probes of
one cell are averaged and counted, so a figure made from a resumed or repeated run still says how much data it rests
on. Scores are shares of their scale, in [0, 1]; when every one is 0 or 1 (and no judge graded them) the grid also
counts the successes per cell, which is what a Wilson interval needs.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Sequence

import numpy as np

from kanana_longctx.errors import ResultsError
from kanana_longctx.results import ResultRecord

# Depths are floats written by different code paths (linspace, a planned grid in run.json, a typed --depths list);
# keys are rounded so that 7.142857142857143 and 7.1428571 land in one row.
_DEPTH_DECIMALS = 6


@dataclass(frozen=True)
class Grid:
    """Mean score per (depth, length) cell, rows = depths ascending (0 at the top), columns = lengths ascending."""

    lengths: tuple[int, ...]
    depths: tuple[float, ...]
    mean: np.ndarray  # (n_depths, n_lengths), scores in [0, 1], NaN where no probe finished
    counts: np.ndarray  # (n_depths, n_lengths), probes per cell
    hits: np.ndarray | None = None  # (n_depths, n_lengths), probes scored 1; None unless every score is 0 or 1

    @property
    def binary(self) -> bool:
        return self.hits is not None

    @property
    def n_probes(self) -> int:
        return int(self.counts.sum())

    @property
    def n_cells(self) -> int:
        return int(self.counts.size)

    @property
    def n_missing(self) -> int:
        return int((self.counts == 0).sum())

    @property
    def max_length(self) -> int:
        return max(self.lengths)

    def length_means(self) -> np.ndarray:
        """Mean over the depths of each length (NaN for a column with no data); cells weigh equally."""
        return _nanmean(self.mean, axis=0)

    def overall_mean(self) -> float:
        """Mean over the finished cells (each cell weighs the same however often it was probed); NaN if none."""
        filled = self.mean[~np.isnan(self.mean)]
        return float(filled.mean()) if filled.size else float("nan")


def _nanmean(values: np.ndarray, axis: int) -> np.ndarray:
    # np.nanmean warns on all-NaN slices; an empty column is expected (unfinished run), not a problem.
    filled = ~np.isnan(values)
    sums = np.where(filled, values, 0.0).sum(axis=axis)
    n = filled.sum(axis=axis)
    out = np.full(sums.shape, np.nan)
    np.divide(sums, n, out=out, where=n > 0)
    return out


def depth_key(depth: float) -> float:
    return round(float(depth), _DEPTH_DECIMALS)


def aggregate(
    records: Iterable[ResultRecord],
    planned_lengths: Sequence[int] = (),
    planned_depths: Sequence[float] = (),
    judge: bool = False,
) -> Grid:
    """Average the scores of each (depth, length) cell.

    The grid's axes are the union of the lengths and depths seen in `records` and the planned ones (from run.json),
    so the columns a killed run never reached still appear, as missing cells. `judge`: the scores are an LLM
    judge's grades, never counted as successes even when they happen to sit at the ends of the scale.
    """
    records = list(records)
    if not records:
        raise ResultsError("no result rows to plot")
    bad_length = next((r for r in records if int(r.length) <= 0), None)
    if bad_length is not None:
        raise ResultsError(f"a row has length {bad_length.length}: lengths are positive token counts")
    bad_depth = next((r for r in records if not 0.0 <= float(r.depth) <= 100.0), None)
    if bad_depth is not None:
        raise ResultsError(f"a row has depth {bad_depth.depth:g}: depths are percent, 0 to 100")
    lengths = sorted({int(r.length) for r in records} | {int(x) for x in planned_lengths})
    depths = sorted({depth_key(r.depth) for r in records} | {depth_key(x) for x in planned_depths})
    col = {length: j for j, length in enumerate(lengths)}
    row = {depth: i for i, depth in enumerate(depths)}
    sums = np.zeros((len(depths), len(lengths)))
    counts = np.zeros((len(depths), len(lengths)), dtype=int)
    hits = np.zeros((len(depths), len(lengths)), dtype=int)
    for r in records:
        i, j = row[depth_key(r.depth)], col[int(r.length)]
        sums[i, j] += float(r.score)
        counts[i, j] += 1
        hits[i, j] += float(r.score) == 1.0
    mean = np.full(sums.shape, np.nan)
    np.divide(sums, counts, out=mean, where=counts > 0)
    binary = not judge and all(float(r.score) in (0.0, 1.0) for r in records)
    return Grid(lengths=tuple(lengths), depths=tuple(depths), mean=mean, counts=counts, hits=hits if binary else None)


def reindex(grid: Grid, lengths: Sequence[int], depths: Sequence[float]) -> Grid:
    """The same grid on other axes (a superset, for comparing two runs); new cells are missing."""
    mean = np.full((len(depths), len(lengths)), np.nan)
    counts = np.zeros((len(depths), len(lengths)), dtype=int)
    hits = np.zeros((len(depths), len(lengths)), dtype=int)
    col = {length: j for j, length in enumerate(grid.lengths)}
    row = {depth_key(d): i for i, d in enumerate(grid.depths)}
    for i, depth in enumerate(depths):
        for j, length in enumerate(lengths):
            src_i, src_j = row.get(depth_key(depth)), col.get(int(length))
            if src_i is not None and src_j is not None:
                mean[i, j] = grid.mean[src_i, src_j]
                counts[i, j] = grid.counts[src_i, src_j]
                if grid.hits is not None:
                    hits[i, j] = grid.hits[src_i, src_j]
    return Grid(
        lengths=tuple(int(x) for x in lengths), depths=tuple(float(d) for d in depths), mean=mean, counts=counts,
        hits=hits if grid.hits is not None else None,
    )


def align(a: Grid, b: Grid) -> tuple[Grid, Grid]:
    """Put two grids on the union of their axes so that cell (i, j) means the same probe in both."""
    lengths = sorted(set(a.lengths) | set(b.lengths))
    depths = sorted({depth_key(d) for d in a.depths} | {depth_key(d) for d in b.depths})
    return reindex(a, lengths, depths), reindex(b, lengths, depths)


def depth_labels(depths: Sequence[float]) -> list[str]:
    """The README's labels: whole percent with '.0' (7.142857 -> '7.0'); one decimal if whole numbers collide."""
    whole = [f"{round(d):.1f}" for d in depths]
    if len(set(whole)) == len(whole):
        return whole
    return [f"{d:.1f}" for d in depths]


def length_labels(lengths: Sequence[int]) -> list[str]:
    """The README's labels: lengths cut to whole thousands (10071 -> '10000', 118929 -> '118000', as the 128K
    figures show), exact where that would merge or zero them (a small smoke-test grid)."""
    rounded = [int(x) // 1000 * 1000 for x in lengths]
    if min(lengths) >= 1000 and len(set(rounded)) == len(rounded):
        return [str(x) for x in rounded]
    return [str(int(x)) for x in lengths]


def size_tag(max_length: int) -> str:
    """The context-size tag of file names and titles: '32k' for the README's 32K grids (longest length 32000 to
    32768), '128k' for its 128K grids (128000 to 131072), else the run's own size ('8k', '4k', '0.5k').

    A run that only went to 8K is tagged 8k, not 32k: the tag is a claim about what was tested.
    """
    if 32000 <= max_length <= 32768:
        return "32k"
    if 128000 <= max_length <= 131072:
        return "128k"
    if max_length % 1024 == 0:
        return f"{max_length // 1024}k"
    if max_length < 1000:
        return f"{max_length / 1000:g}k"
    return f"{round(max_length / 1000)}k"


def depth_bands(depths: Sequence[float], n_bands: int = 5) -> list[tuple[str, list[int]]]:
    """Split depth rows into equal-width percent bands ('0-20%', ...); returns (label, row indices) for non-empty
    bands. 100% belongs to the last band."""
    width = 100.0 / n_bands
    bands: list[tuple[str, list[int]]] = []
    for b in range(n_bands):
        lo, hi = b * width, (b + 1) * width
        last = b == n_bands - 1
        rows = [i for i, d in enumerate(depths) if lo <= d < hi or (last and d >= hi)]
        if rows:
            bands.append((f"{lo:g}-{hi:g}%", rows))
    return bands
