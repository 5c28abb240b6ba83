"""The numbers behind a heatmap: mean score overall, per length and per depth band, with intervals and counts, and
the failure classes when the rows carry them.

Usage: s = summarize(grid, records, rng=np.random.default_rng(0)); s.overall, s.per_length, s.per_band, s.outcomes

Means are over finished cells, each cell weighing the same however often it was probed (the figure shows cell
means, so the table must agree with it). Missing cells are counted, never scored. Intervals (95%) come from the
probes: Wilson when every score is 0 or 1, a bootstrap of the mean otherwise, none for rows that are already
per-cell means (a report's) or when no probe rows are given.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from kanana_longctx.plot.grid import Grid, depth_bands, depth_key
from kanana_longctx.results import ResultRecord
from kanana_longctx.scoring import OUTCOMES
from kanana_longctx.stats import Interval, bootstrap_mean_interval, wilson_interval

WILSON = "Wilson"
BOOTSTRAP = "bootstrap"
# The failure classes in reading order (kanana_longctx.scoring's); rows without one are derived from their score.
OUTCOME_ORDER = (*OUTCOMES, "other")


@dataclass(frozen=True)
class Row:
    label: str
    mean: float  # in [0, 1]; NaN when every cell of the row is missing
    cells: int  # finished cells
    planned: int  # cells in the grid (finished + missing)
    probes: int
    interval: Interval = Interval.missing()  # 95%, shares of the scale
    hits: int | None = None  # probes scored 1, when every score is 0 or 1


@dataclass(frozen=True)
class OutcomeRow:
    outcome: str
    probes: int
    share: float


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
    interval: Interval = Interval.missing()
    interval_method: str = ""  # WILSON | BOOTSTRAP | "" (none)
    hits: int | None = None
    outcomes: tuple[OutcomeRow, ...] = ()

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

        def interval(i: Interval) -> list | None:
            return None if math.isnan(i.low) else [num(i.low), num(i.high)]

        def rows(rs: tuple[Row, ...]) -> list[dict]:
            return [{**r.__dict__, "mean": num(r.mean), "interval": interval(r.interval)} for r in rs]

        return {
            "overall": num(self.overall),
            "interval": interval(self.interval),
            "interval_method": self.interval_method,
            "n_probes": self.n_probes,
            "n_cells": self.n_cells,
            "n_filled": self.n_filled,
            "n_missing": self.n_missing,
            "repeats": self.repeats_text,
            "per_length": rows(self.per_length),
            "per_band": rows(self.per_band),
            "outcomes": [o.__dict__ for o in self.outcomes],
        }


def derived_outcome(record: ResultRecord) -> str:
    """The row's failure class; rows scored before classes existed: found at 1, partial between, other at 0."""
    if record.outcome:
        return record.outcome
    return "found" if record.score == 1.0 else "partial" if record.score > 0.0 else "other"


def outcome_table(records: Sequence[ResultRecord]) -> tuple[OutcomeRow, ...]:
    """Probes per failure class, when some row carries a class (none otherwise: nothing was classified)."""
    if not records or not any(r.outcome for r in records):
        return ()
    counts = Counter(derived_outcome(r) for r in records)
    order = list(OUTCOME_ORDER) + sorted(set(counts) - set(OUTCOME_ORDER))
    return tuple(OutcomeRow(o, counts[o], counts[o] / len(records)) for o in order if counts[o])


def _interval(method: str, hits: int | None, n: int, values: list[float], rng) -> Interval:
    if method == WILSON and hits is not None:
        return wilson_interval(hits, n)
    if method == BOOTSTRAP and values:
        return bootstrap_mean_interval(values, rng)
    return Interval.missing()


def _row(label: str, grid: Grid, rows: Sequence[int], cols: Sequence[int], method: str, values: list[float],
         rng) -> Row:
    means, counts = grid.mean[np.ix_(rows, cols)], grid.counts[np.ix_(rows, cols)]
    filled = counts > 0
    value = float(means[filled].mean()) if filled.any() else float("nan")
    n = int(counts.sum())
    hits = int(grid.hits[np.ix_(rows, cols)].sum()) if grid.hits is not None else None
    return Row(label=label, mean=value, cells=int(filled.sum()), planned=int(counts.size), probes=n,
               interval=_interval(method, hits, n, values, rng), hits=hits)


def summarize(
    grid: Grid, records: Sequence[ResultRecord] | None = None, rng: np.random.Generator | None = None,
    n_bands: int = 5, per_probe: bool = True,
) -> Summary:
    """`records` (the grid's rows) give the bootstrap intervals of fractional scores and the outcome table;
    `per_probe=False` says the rows are per-cell means, which get no interval."""
    records = list(records or [])
    rng = rng if rng is not None else np.random.default_rng(0)
    method = WILSON if grid.binary else BOOTSTRAP if records and per_probe else ""
    by_length: dict[int, list[float]] = {}
    by_depth: dict[float, list[float]] = {}
    for r in records:
        by_length.setdefault(int(r.length), []).append(float(r.score))
        by_depth.setdefault(depth_key(r.depth), []).append(float(r.score))
    all_rows, all_cols = list(range(len(grid.depths))), list(range(len(grid.lengths)))
    per_length = tuple(
        _row(str(length), grid, all_rows, [j], method, by_length.get(length, []), rng)
        for j, length in enumerate(grid.lengths)
    )
    per_band = tuple(
        _row(label, grid, rows, all_cols, method,
             [s for i in rows for s in by_depth.get(depth_key(grid.depths[i]), [])], rng)
        for label, rows in depth_bands(grid.depths, n_bands)
    )
    filled = grid.counts > 0
    repeats = grid.counts[filled]
    overall = _row("all", grid, all_rows, all_cols, method, [float(r.score) for r in records], rng)
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
        interval=overall.interval,
        interval_method=method if not math.isnan(overall.interval.low) else "",
        hits=overall.hits,
        outcomes=outcome_table(records),
    )
