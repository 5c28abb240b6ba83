"""Progress and end-of-run reporting for a model run (rich), kept apart from the runner's logic.

Usage: reporter = RichReporter(console); ...; render_summary(console, summary)

The runner calls a `Reporter`; the CLI passes `RichReporter`, tests pass `NullReporter`. The end-of-run table is
built from a `RunSummary` record, so the numbers can also be read programmatically (the benchmark does). The
summary knows the backend only through its `BackendInfo`.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field

from kanana_longctx.backends.base import BackendInfo
from kanana_longctx.plan.memory import kv_rows_text
from kanana_longctx.results import ResultRecord


@dataclass(frozen=True)
class RunSummary:
    out_dir: str
    total: int  # probes in the grid
    skipped: int  # already done before this run (resume)
    ran: int  # run now
    accuracy_by_length: dict  # length -> mean score over every finished probe of that length
    accuracy: float
    wall_seconds: float  # for the probes run now, model load excluded
    load_seconds: float
    backend: BackendInfo  # what ran: engine, device, dtype, kernel or endpoint
    effective_flops: float = 0.0  # prefill FLOPs of the probes run now, as if nothing were reused
    computed_flops: float = 0.0  # prefill FLOPs actually computed (prefix reuse removes part)
    prefill_seconds: float = 0.0  # fast engine: time in prefill and in decoding (0.0 when not split)
    decode_seconds: float = 0.0
    setup_seconds: float = 0.0  # fast engine: before the first probe (planning, KV buffers, weight fusing)
    peak_memory_gib: float = 0.0
    kv_rows: int = 0  # fast engine: probes decoded together, one KV buffer row each
    chunk_tokens: int = 0  # fast engine: tokens per prefill chunk
    matmul_tflops: float = 0.0  # the GPU's bf16 matmul rate, measured after the run (the share-of-peak yardstick)
    notes: tuple[str, ...] = field(default_factory=tuple)
    by_length: tuple["LengthAccuracy", ...] = ()  # accuracy_by_length with the probe count and a 95% interval
    outcomes: dict = field(default_factory=dict)  # failure class -> probes (kanana_longctx.scoring.outcome_counts)

    @property
    def effective_tflops(self) -> float:
        return self.effective_flops / self.wall_seconds / 1e12 if self.wall_seconds > 0 else 0.0

    @property
    def prefill_tflops(self) -> float:
        """The prefill's rate on the FLOPs it computed (0.0 when the loop did not time its phases)."""
        return self.computed_flops / self.prefill_seconds / 1e12 if self.prefill_seconds > 0 else 0.0


@dataclass(frozen=True)
class LengthAccuracy:
    """The finished probes of one length: how many, their mean score, and its Wilson 95% interval where every
    score is 0 or 1 (NaN bounds otherwise: a share of recalled values is no Bernoulli trial)."""

    length: int
    probes: int
    mean: float
    low: float
    high: float


def length_accuracy(records: list[ResultRecord]) -> tuple[LengthAccuracy, ...]:
    from kanana_longctx.stats import Interval, is_binary, wilson_interval

    by_length: dict[int, list[float]] = defaultdict(list)
    for r in records:
        by_length[r.length].append(r.score)
    rows = []
    for length, scores in sorted(by_length.items()):
        binary = is_binary(scores)
        ci = wilson_interval(int(sum(scores)), len(scores)) if binary else Interval.missing()
        rows.append(LengthAccuracy(length, len(scores), sum(scores) / len(scores), ci.low, ci.high))
    return tuple(rows)


def accuracy_by_length(records: list[ResultRecord]) -> dict[int, float]:
    sums: dict[int, list[float]] = defaultdict(list)
    for r in records:
        sums[r.length].append(r.score)
    return {length: sum(v) / len(v) for length, v in sorted(sums.items())}


class NullReporter:
    def start(self, total: int, done: int, description: str) -> None: ...
    def advance(self, record: ResultRecord) -> None: ...
    def note(self, message: str) -> None: ...
    def stop(self) -> None: ...


class RichReporter:
    """Bar, ETA, probes/s and running accuracy."""

    def __init__(self, console):
        self.console = console
        self._progress = None
        self._task = None
        self._scores: list[float] = []

    def start(self, total: int, done: int, description: str) -> None:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        self._progress = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[rate]}"),
            TextColumn("acc {task.fields[acc]}"),
            TimeRemainingColumn(),
            console=self.console,
            transient=False,
        )
        self._progress.start()
        self._task = self._progress.add_task(description, total=total, completed=done, rate="", acc="-")

    def advance(self, record: ResultRecord) -> None:
        self._scores.append(record.score)
        if self._progress is None:
            return
        task = self._progress.tasks[0]
        elapsed = task.elapsed or 0.0
        rate = f"{len(self._scores) / elapsed:.2f} probes/s" if elapsed > 0 else ""
        acc = f"{sum(self._scores) / len(self._scores):.2f}"
        self._progress.update(self._task, advance=1, rate=rate, acc=acc)

    def note(self, message: str) -> None:
        self.console.print(message)

    def stop(self) -> None:
        if self._progress is not None:
            self._progress.stop()


def render_summary(console, summary: RunSummary) -> None:
    from rich.table import Table

    table = Table(title="Accuracy per context length", show_lines=False)
    table.add_column("length", justify="right")
    table.add_column("probes", justify="right")
    table.add_column("accuracy", justify="right")
    table.add_column("95% interval", justify="right")
    for row in summary.by_length:
        colour = "green" if row.mean >= 0.9 else "yellow" if row.mean >= 0.5 else "red"
        interval = f"{row.low:.2f}-{row.high:.2f}" if row.low == row.low else "-"  # NaN: not binary
        table.add_row(f"{row.length:,}", str(row.probes), f"[{colour}]{row.mean:.2f}[/]", interval)
    console.print(table)
    if summary.outcomes:
        from kanana_longctx.scoring import OUTCOME_TEXT

        classes = Table(title="Answers by failure class", show_lines=False)
        classes.add_column("class")
        classes.add_column("probes", justify="right")
        classes.add_column("meaning")
        for name, count in summary.outcomes.items():
            classes.add_row(name, str(count), OUTCOME_TEXT.get(name, "rows of an older run, not classed"))
        console.print(classes)
    console.print(
        f"overall accuracy [bold]{summary.accuracy:.3f}[/] over {summary.ran + summary.skipped}"
        f" probes ({summary.ran} run now, {summary.skipped} resumed); {summary.backend.describe()}"
    )
    if summary.ran:
        line = f"wall {summary.wall_seconds:.1f} s after a {summary.load_seconds:.1f} s model load"
        if summary.backend.device == "cuda" and summary.wall_seconds > 0:
            line += (
                f"; {summary.effective_tflops:.0f} TFLOP/s effective (no-reuse FLOPs / wall), "
                f"{summary.computed_flops / summary.wall_seconds / 1e12:.0f} TFLOP/s computed, "
                f"peak memory {summary.peak_memory_gib:.1f} GiB"
            )
            if summary.matmul_tflops:
                line += (
                    f"; {summary.effective_tflops / summary.matmul_tflops:.0%} of the measured bf16 matmul rate "
                    f"({summary.matmul_tflops:.0f} TFLOP/s)"
                )
        console.print(line)
        if summary.prefill_seconds:
            rate = ""
            if summary.backend.device == "cuda":
                rate = f" ({summary.prefill_tflops:.0f} TFLOP/s on the computed FLOPs)"
            layout = ""
            if summary.kv_rows:
                layout = f" ({kv_rows_text(summary.kv_rows)}, {summary.chunk_tokens}-token chunks)"
            console.print(
                f"setup {summary.setup_seconds:.1f} s, prefill {summary.prefill_seconds:.1f} s{rate}, decode "
                f"{summary.decode_seconds:.1f} s{layout}"
            )
    for note in summary.notes:
        console.print(f"[yellow]note:[/] {note}")
    console.print(f"results: {summary.out_dir}/results.jsonl")
