"""The numbers behind a heatmap: mean score overall, per length and per depth band, with probe counts.

Usage: s = summarize(grid); s.overall, s.per_length, s.per_band

Means are over finished cells, each cell weighing the same however often it was probed (the figure shows cell
means, so the table must agree with it). Missing cells are counted, never scored.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from kanana_longctx.plot.grid import Grid, depth_bands


@dataclass(frozen=True)
class Row:
    label: str
    mean: float  # in [0, 1]; NaN when every cell of the row is missing
    cells: int  # finished cells
    planned: int  # cells in the grid (finished + missing)
    probes: int


@dataclass(frozen=True)
class Summary:
    overall: float  # in [0, 1]; NaN when nothing finished
    n_probes: int
    n_cells: int
    n_filled: int
    n_missing: int
    min_repeats: int  # probes per finished cell, smallest and largest: 1/1 for a plain run
    max_repeats: int
    per_length: tuple[Row, ...]
    per_band: tuple[Row, ...]

    @property
    def repeats_text(self) -> str:
        if self.n_filled == 0:
            return "0"
        if self.min_repeats == self.max_repeats:
            return str(self.min_repeats)
        return f"{self.min_repeats}-{self.max_repeats}"

    def to_dict(self) -> dict:
        def num(x: float) -> float | None:
            return None if math.isnan(x) else round(x, 6)

        def rows(rs: tuple[Row, ...]) -> list[dict]:
            return [{**r.__dict__, "mean": num(r.mean)} for r in rs]

        return {
            "overall": num(self.overall),
            "n_probes": self.n_probes,
            "n_cells": self.n_cells,
            "n_filled": self.n_filled,
            "n_missing": self.n_missing,
            "repeats": self.repeats_text,
            "per_length": rows(self.per_length),
            "per_band": rows(self.per_band),
        }


def _row(label: str, means: np.ndarray, counts: np.ndarray) -> Row:
    filled = counts > 0
    value = float(means[filled].mean()) if filled.any() else float("nan")
    return Row(label=label, mean=value, cells=int(filled.sum()), planned=int(counts.size), probes=int(counts.sum()))


def summarize(grid: Grid, n_bands: int = 5) -> Summary:
    filled = grid.counts > 0
    per_length = tuple(
        _row(str(length), grid.mean[:, j], grid.counts[:, j]) for j, length in enumerate(grid.lengths)
    )
    per_band = tuple(
        _row(label, grid.mean[rows, :], grid.counts[rows, :]) for label, rows in depth_bands(grid.depths, n_bands)
    )
    repeats = grid.counts[filled]
    return Summary(
        overall=grid.overall_mean(),
        n_probes=grid.n_probes,
        n_cells=grid.n_cells,
        n_filled=int(filled.sum()),
        n_missing=grid.n_missing,
        min_repeats=int(repeats.min()) if repeats.size else 0,
        max_repeats=int(repeats.max()) if repeats.size else 0,
        per_length=per_length,
        per_band=per_band,
    )
