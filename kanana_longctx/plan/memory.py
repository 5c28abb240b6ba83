"""How many KV buffer rows and how long a prefill chunk a fast run on the GPU takes: both live beside the weights,
so they are chosen together against one budget.

Usage: plan = plan_memory(row_bytes=..., chunk_bytes_per_token=..., budget_bytes=..., probes=...)
       plan.rows, plan.chunk_tokens, plan.describe()

Why: decoding is memory-bound, so probes decoded together share each step's weight read, and every row that fits
is worth having (at 128K a second row cuts the 8B model's decoding per probe by 30%; docs/performance.md). Rows
are the large part: one row of the 8B model at 128K is 15.75 GiB of K and V. The prefill chunk is the other part:
its MLP activations grow with its tokens (~4 GiB at 32K tokens for the 8B model, ~2 at 16K), and on the H100 a
16K-token chunk prefills as fast as a 32K one. So the plan takes the most rows for which some chunk still fits,
then the longest chunk that fits beside them: at 128K on an 80 GB card that is two rows with 16K chunks (peak
48.6 GiB measured) where 32K chunks would have left room for one row only.

Pure arithmetic (no torch): the caller measures the GPU and the model.
"""

from __future__ import annotations

from dataclasses import dataclass

MAX_ROWS = 8  # the cap the engine has always had; more rows were never measured
CHUNK_CHOICES = (32768, 16384)  # both measured equally fast on the H100 at 128K; shorter chunks were not measured
# The run's peak (weights, KV rows and one chunk's activations) aims at this share of the GPU's memory: 50 GiB on
# an 80 GB card (the target in docs/performance.md), leaving the rest to other processes and the allocator's slack.
RUN_PEAK_SHARE = 0.63
# And at most this share of what is free now, whatever the total: another process may hold the rest.
FREE_SHARE = 0.6


def kv_rows_text(rows: int) -> str:
    """"1 KV row", "2 KV rows": how reports name the rows."""
    return f"{rows} KV row{'s' if rows != 1 else ''}"


@dataclass(frozen=True)
class MemoryPlan:
    """Rows and chunk of a fast run, with the bytes they were planned to take (KV rows + one chunk's
    activations) and the budget they had."""

    rows: int
    chunk_tokens: int
    planned_bytes: int
    budget_bytes: int

    @property
    def fits(self) -> bool:
        return self.planned_bytes <= self.budget_bytes

    def describe(self) -> str:
        gib = 2**30
        fit = "" if self.fits else " (over budget: even one row does not fit)"
        return (
            f"{kv_rows_text(self.rows)} and {self.chunk_tokens}-token prefill chunks: "
            f"{self.planned_bytes / gib:.1f} of {self.budget_bytes / gib:.1f} GiB planned{fit}"
        )


def chunk_bytes_per_token(hidden: int, intermediate: int, element_size: int) -> int:
    """Transient bytes per token of one prefill chunk at its peak, in the MLP: gate and up projections and their
    product (3 x intermediate), beside the hidden states, the residual and the attention output (~6 x hidden).
    Matches the H100 measurements of the 8B model (4.1 GiB at 32K tokens, 2.1 at 16K) within 0.1 GiB."""
    return (3 * intermediate + 6 * hidden) * element_size


def gib_bytes(gib: float) -> int:
    return int(gib * 2**30)


def under_cap(budget: float, allocated: int, cap: int) -> float:
    """`budget` bounded by what `cap` (bytes, 0: none) leaves beside what is already allocated (the weights):
    `--max-memory`, for the fast loop's rows and chunk and the plain loop's batches alike."""
    return min(budget, cap - allocated) if cap > 0 else budget


def run_budget_bytes(total: int, allocated: int, free: int, cap: int = 0) -> int:
    """Bytes the rows and the chunk may take: up to RUN_PEAK_SHARE of the GPU counting what is already allocated
    (the weights), and at most FREE_SHARE of what is free. `cap` (bytes, 0: none) bounds the whole peak, weights
    included: `--max-memory` for a GPU shared with a server, or to plan a larger card like a smaller one (an H200
    capped at 50 GiB plans as an 80 GB H100 does)."""
    budget = min(int(RUN_PEAK_SHARE * total) - allocated, int(FREE_SHARE * free))
    return max(0, under_cap(budget, allocated, cap))


def plan_memory(
    *, row_bytes: int, chunk_bytes_per_token: int, budget_bytes: int, probes: int,
    max_rows: int = MAX_ROWS, chunks: tuple[int, ...] = CHUNK_CHOICES,
) -> MemoryPlan:
    """The most rows (at most `max_rows` and `probes`) for which some chunk fits beside them, with the longest
    chunk that does. Where not even one row fits with the shortest chunk: one row and the shortest chunk all the
    same (a run needs them; `fits` says it is over)."""
    if row_bytes <= 0 or chunk_bytes_per_token <= 0 or not chunks:
        raise ValueError("row bytes, chunk bytes per token and the chunk choices must be positive")
    chunks = tuple(sorted(chunks, reverse=True))
    for rows in range(max(1, min(max_rows, probes)), 0, -1):
        for chunk in chunks:
            planned = rows * row_bytes + chunk * chunk_bytes_per_token
            if planned <= budget_bytes:
                return MemoryPlan(rows, chunk, planned, budget_bytes)
    shortest = chunks[-1]
    return MemoryPlan(1, shortest, row_bytes + shortest * chunk_bytes_per_token, budget_bytes)
