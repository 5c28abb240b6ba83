"""What a run takes beside the weights (pure arithmetic, no torch): the fast run's KV buffer rows and prefill
chunk, chosen together against one budget, the buffer's length, and the plain loop's batch size.

Usage: plan = plan_memory(row_bytes=row_kv_bytes(dims, tokens), chunk_bytes_per_token=..., budget_bytes=..., probes=n)
       plan.rows, plan.chunk_tokens, plan.describe()

Why rows and chunk together: decoding is memory-bound, so probes decoded together share each step's weight read,
and every row that fits is worth having. Rows are the large part (one row of an 8B Llama at 128K holds 15.75 GiB
of K and V); the prefill chunk is the other part, its MLP activations growing with its tokens, and a 16K-token
chunk prefills about as fast as a 32K one. So the plan takes the most rows for which some chunk still fits, then
the longest chunk that fits beside them: at 128K on an 80 GB card that is two rows with 16K chunks where 32K
chunks would leave room for one row only (docs/performance.md has the measurements).

The caller measures the GPU (kanana_longctx.backends.gpu) and reads the model's dimensions (plan.dims).
"""

from __future__ import annotations

from dataclasses import dataclass

from kanana_longctx.plan.dims import ModelDims

MAX_ROWS = 8  # the cap the engine has always had; more rows were never measured
CHUNK_CHOICES = (32768, 16384)  # equally fast at 128K (docs/performance.md); shorter chunks were not measured
PLAIN_MAX_BATCH = 16  # the plain loop's largest batch of equal-length probes
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
    Within 0.1 GiB of the 8B model's measured peaks (docs/performance.md)."""
    return (3 * intermediate + 6 * hidden) * element_size


def dtype_bytes(dtype: str) -> int:
    """Bytes per element of the run's dtype name (float32, else a half-precision type)."""
    return 4 if dtype == "float32" else 2


def row_kv_bytes(dims: ModelDims, tokens: int, element_size: int = 2) -> int:
    """Bytes of one buffer row: K and V for every layer over `tokens` positions."""
    return 2 * dims.layers * dims.kv_heads * tokens * dims.head_dim * element_size


def buffer_tokens_for(tokens: int, tile: int) -> int:
    """The KV buffer's length for `tokens` positions: up to the end of the last tile (tiled attention reads whole
    tiles), `tokens` itself without tiles."""
    return tokens + (-tokens % tile) if tile else tokens


def plain_batch_size(dims: ModelDims, tokens: int, room_bytes: float, element_size: int) -> int:
    """Probes of `tokens` tokens the plain loop runs together in `room_bytes`: each takes its KV cache and its
    MLP activations (6 x intermediate per token); at least 1, at most PLAIN_MAX_BATCH."""
    per_token = row_kv_bytes(dims, 1, element_size) + 6 * dims.ffn * element_size
    return max(1, min(PLAIN_MAX_BATCH, int(room_bytes // (per_token * tokens))))


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


MAX_DECODE_ROWS = 16  # probes the reuse engine decodes together at most (16 rows of 32K were not measured)
CPU_DECODE_ROWS = 4  # on a CPU: no memory to plan, and little to gain from wider steps


def decode_groups(lengths: list[int], *, room_bytes: float, kv_bytes_per_token: float, max_new_tokens: int,
                  max_rows: int = MAX_DECODE_ROWS) -> list[list[int]]:
    """The reuse engine's decoding groups: consecutive probes (indices into `lengths`, in the order their prompts
    are computed) decoded together, each group's K and V held as rows padded to its longest prompt plus the answer
    budget, within `room_bytes`. A group takes the next probe while `rows x (longest + budget) x bytes per token`
    still fits and it has fewer than `max_rows`; a probe that does not fit even alone is a group of one (the run
    needs it; one row is what the one-sequence loop held before).

    Why consecutive: the order is the prefix plan's (each prompt computed from the longest prefix it shares with
    the previous one); decoding must not reorder the prefill, only wait for a group to fill."""
    if kv_bytes_per_token < 0 or max_rows < 1:
        raise ValueError("bytes per token must not be negative and a group holds at least one row")
    groups: list[list[int]] = []
    group: list[int] = []
    longest = 0
    for index, length in enumerate(lengths):
        wider = max(longest, length)
        if group and (len(group) >= max_rows or (len(group) + 1) * (wider + max_new_tokens) * kv_bytes_per_token > room_bytes):
            groups.append(group)
            group, wider = [], length
        group.append(index)
        longest = wider
    if group:
        groups.append(group)
    return groups
