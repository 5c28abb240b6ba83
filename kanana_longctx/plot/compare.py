"""Paired comparison of two runs on the same probes: per-cell tests for the difference panel, and the overall test.

Usage: cmp = compare_runs(run_a, run_b, rng=np.random.default_rng(0)); cmp.overall.p_value, cmp.significant_cells

Rows pair by probe identity: `probe_id` (with repeat and task) when both runs are ours, otherwise (length, depth,
repeat, task); a key seen k times pairs its k-th rows. Binary runs (every score 0 or 1) are compared with the exact
McNemar test, others with the sign-flip permutation test. A cell is tested only when it has enough pairs for an
exact test to reach alpha at all (6 for 0.05); with fewer (3 repeats per cell, say) no cell can be marked whatever
the data, and the overall test over every pair is the one that can speak. Per-cell marks are uncorrected; the
Benjamini-Hochberg count says how many survive a false-discovery-rate control.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass

import numpy as np

from kanana_longctx.plot.grid import depth_key
from kanana_longctx.plot.meta import RunData
from kanana_longctx.results import ResultRecord
from kanana_longctx.stats import (
    ALPHA, PairedResult, benjamini_hochberg, min_pairs_for, paired_test, smallest_exact_p,
)

Cell = tuple[int, float]  # (length, depth key)


@dataclass(frozen=True)
class CellTest:
    n_pairs: int
    p_value: float  # NaN when the cell has too few pairs to be tested

    @property
    def tested(self) -> bool:
        return not math.isnan(self.p_value)

    @property
    def significant(self) -> bool:
        return self.tested and self.p_value < ALPHA


@dataclass(frozen=True)
class Comparison:
    test: str  # "McNemar exact" | "sign-flip permutation"
    overall: PairedResult | None  # None when no row pairs
    cells: dict[Cell, CellTest]
    unpaired_a: int
    unpaired_b: int
    survive_fdr: int  # marked cells whose Benjamini-Hochberg adjusted p is still below alpha
    alpha: float = ALPHA

    @property
    def min_pairs(self) -> int:
        return min_pairs_for(self.alpha)

    @property
    def max_cell_pairs(self) -> int:
        return max((c.n_pairs for c in self.cells.values()), default=0)

    @property
    def n_tested(self) -> int:
        return sum(c.tested for c in self.cells.values())

    @property
    def significant_cells(self) -> frozenset[Cell]:
        return frozenset(cell for cell, c in self.cells.items() if c.significant)

    @property
    def cells_too_small(self) -> bool:
        return self.n_tested == 0

    def cell_note(self) -> str:
        """One line on the per-cell tests, for the figure and the summary."""
        if self.cells_too_small:
            n = self.max_cell_pairs
            return (
                f"cells too small for a per-cell test: {n} pair{'s' if n != 1 else ''} per cell at most, and an "
                f"exact test needs {self.min_pairs} to reach p < {self.alpha:g} (smallest possible p with {n}: "
                f"{smallest_exact_p(n):.3g})"
            )
        marked = len(self.significant_cells)
        return (
            f"{marked} of {self.n_tested} tested cells differ at p < {self.alpha:g} ({self.test}, per cell, "
            f"uncorrected: about {self.n_tested * self.alpha:.0f} would by chance if nothing differed); "
            f"{self.survive_fdr} survive Benjamini-Hochberg FDR {self.alpha:g}"
        )


def _identity(record: ResultRecord, by_probe_id: bool) -> tuple:
    if by_probe_id:
        return (record.probe_id, record.repeat, record.task)
    return (int(record.length), depth_key(record.depth), record.repeat, record.task)


def _keyed(records, by_probe_id: bool) -> dict[tuple, ResultRecord]:
    seen: Counter = Counter()
    out = {}
    for r in records:
        key = _identity(r, by_probe_id)
        out[key + (seen[key],)] = r
        seen[key] += 1
    return out


def pair_records(
    a: tuple[ResultRecord, ...], b: tuple[ResultRecord, ...], by_probe_id: bool
) -> tuple[list[tuple[ResultRecord, ResultRecord]], int, int]:
    """(pairs in A's order, rows of A without a partner, rows of B without one)."""
    keyed_a, keyed_b = _keyed(a, by_probe_id), _keyed(b, by_probe_id)
    pairs = [(ra, keyed_b[key]) for key, ra in keyed_a.items() if key in keyed_b]
    return pairs, len(keyed_a) - len(pairs), len(keyed_b) - len(pairs)


def compare_runs(run_a: RunData, run_b: RunData, rng: np.random.Generator) -> Comparison:
    by_probe_id = run_a.format == run_b.format == "kanana"
    pairs, unpaired_a, unpaired_b = pair_records(run_a.records, run_b.records, by_probe_id)
    binary = run_a.binary and run_b.binary
    test = "McNemar exact" if binary else "sign-flip permutation"
    min_pairs = min_pairs_for(ALPHA)
    by_cell: dict[Cell, list[tuple[float, float]]] = {}
    for ra, rb in pairs:
        by_cell.setdefault((int(ra.length), depth_key(ra.depth)), []).append((ra.score, rb.score))
    cells = {}
    for cell, scores in by_cell.items():
        if len(scores) < min_pairs:
            cells[cell] = CellTest(len(scores), math.nan)
            continue
        a, b = zip(*scores)
        result = paired_test(a, b, rng, binary=binary, with_interval=False)
        cells[cell] = CellTest(len(scores), result.p_value)
    tested = [(cell, c.p_value) for cell, c in cells.items() if c.tested]
    adjusted = benjamini_hochberg([p for _, p in tested])
    survive = int(sum(1 for (cell, _), q in zip(tested, adjusted) if q < ALPHA and cells[cell].significant))
    overall = None
    if pairs:
        overall = paired_test([ra.score for ra, _ in pairs], [rb.score for _, rb in pairs], rng, binary=binary)
    return Comparison(test=test, overall=overall, cells=cells, unpaired_a=unpaired_a, unpaired_b=unpaired_b,
                      survive_fdr=survive)
