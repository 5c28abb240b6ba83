"""Run a probe set on a model, resumably: `run_niah(probe_set, options, out_dir, console)`.

Usage: summary = execute(probe_set, RunOptions(model="smollm2"), Path("runs/demo"))

A run is five phases over one RunContext, ordered so that every cheap check comes before anything destructive
or slow: `check` (the options, the backend chosen and opened, the lengths against the model's context: a config
at most, no weights), `open_run_dir` (under the directory's lock, held to the end: refuse a different
configuration, find the probes already done, clear an --overwrite, write run.json marked running), `load` (the
weights; run.json rewritten with what the backend chose), `loop` (the backend generates,
each finished batch is scored and appended to results.jsonl, fsynced, so a kill -9 loses at most the batch in
flight) and `summarize`. The same command on the same directory resumes; when the directory already holds every
probe, `open_run_dir` is followed by `finished`: the summary, no weights loaded. Which backend runs is the
registry's choice (kanana_longctx.backends.registry); nothing here knows which one it was.
"""

from __future__ import annotations

import contextlib
import dataclasses
import time
from pathlib import Path

from kanana_longctx.backends.base import BackendInfo, BackendRequest, LoopStats, RunJob
from kanana_longctx.backends.registry import open_backend
from kanana_longctx.errors import ProbeError
from kanana_longctx.hub import resolve_model
from kanana_longctx.options import RunOptions
from kanana_longctx.plan.flops import prefill_flops
from kanana_longctx.probes.spec import ProbeSet
from kanana_longctx.results import (
    RESULTS_NAME, ResultsWriter, RunInfo, load_results, read_run_info, select_rows, write_run_info,
)
from kanana_longctx.run import distributed
from kanana_longctx.run.check import check_context, default_max_new_tokens, grid_of, validate_options, yarn_request
from kanana_longctx.run.context import RunContext
from kanana_longctx.run.lock import run_dir_lock
from kanana_longctx.run.records import RecordSink
from kanana_longctx.run.reporting import (
    NullReporter, RichReporter, RunSummary, accuracy_by_length, length_accuracy, render_summary,
)
from kanana_longctx.run.rundir import prepare_out_dir, results_path, row_warnings
from kanana_longctx.scoring import SCORER_LABELS, outcome_counts
from kanana_longctx.writable import check_writable_dir


def run_niah(probe_set: ProbeSet, options: RunOptions, out_dir: Path, console, *, tokenizer=None) -> RunSummary:
    """CLI entry: run with rich progress and print the end-of-run table."""
    rank = distributed.rank_from_env()
    first = rank is None or rank.rank == 0
    reporter = RichReporter(console) if first else NullReporter()  # one progress bar, not one per rank
    summary = execute(probe_set, options, Path(out_dir), reporter=reporter, tokenizer=tokenizer)
    if first:
        render_summary(console, summary)
    return summary


def execute(probe_set: ProbeSet, options: RunOptions, out_dir: Path, *, reporter=None, tokenizer=None, loaded=None):
    """Run the pending probes of `probe_set`; return a RunSummary. `loaded` lets the benchmark pass its own model."""
    ctx = check(probe_set, options, Path(out_dir), reporter or NullReporter(), tokenizer, loaded)
    check_writable_dir(ctx.out_dir, "run directory")  # before the lock file, the weights and run.json
    with contextlib.ExitStack() as held:
        if ctx.first_rank:  # one writer per directory; this run's other ranks share it (run/lock.py)
            held.enter_context(run_dir_lock(ctx.out_dir))
        open_run_dir(ctx)
        if ctx.complete:  # every rank sees the same directory, so all of them take this path
            summary = finished(ctx)
            if ctx.first_rank:  # the directory's own run.json (what computed the rows), now marked complete
                write_run_info(ctx.out_dir, _with_status(read_run_info(ctx.out_dir) or ctx.info, "complete"))
            return summary
        load(ctx)
        loop(ctx)
        summary = summarize(ctx)
        if ctx.first_rank:
            done = distributed.done_ids(ctx.out_dir, ctx.info.to_dict())
            status = "complete" if done.issuperset(p.probe_id for p in probe_set.probes) else "incomplete"
            write_run_info(ctx.out_dir, _with_status(ctx.info, status))
    return summary


def _with_status(info: RunInfo, status: str) -> RunInfo:
    """run.json's `extra.status`: running (written before the model loads, so that a run in progress, or one that
    was killed, shows), complete or incomplete (--limit, or a shard of the grid) when the process ended."""
    return dataclasses.replace(info, extra={**info.extra, "status": status})


def _open(options: RunOptions, tokenizer, loaded):
    """The backend the options ask for, opened (a config read at most); the tokenizer it needs."""
    validate_options(options)
    source = resolve_model(options.model, options.revision) if loaded is None else None
    if tokenizer is None and source is not None:
        from kanana_longctx.tokenizer import load_tokenizer

        tokenizer = load_tokenizer(source, trust_remote_code=options.trust_remote_code)
    rank = distributed.rank_from_env()
    device_index = rank.local_rank if rank is not None and options.tp <= 1 else None  # data parallel: one GPU each
    backend = open_backend(BackendRequest(options, source, tokenizer, loaded=loaded, device_index=device_index))
    return backend, tokenizer, rank


def _yarn_original_note(options: RunOptions, limits) -> str:
    if options.yarn is not True or options.yarn_original is not None or not limits.yarn:
        return ""
    native = limits.yarn.get("original_max_position_embeddings")
    return f"--yarn over the model's native context of {native:,} tokens (no --yarn-original given)" if native else ""


def preflight(options: RunOptions, longest_length: int, *, tokenizer=None) -> list[str]:
    """Before any probe is built: the options, the device, dtype and kernel, and the longest length (plus an
    explicit answer budget) against the model's context, from its config alone. Returns the notes to show."""
    backend, _, _ = _open(options, tokenizer, None)
    limits = backend.context()
    note = check_context(limits, longest_length + options.max_new_tokens, options.yarn_factor)
    return [n for n in (_yarn_original_note(options, limits), note) if n]


def check(probe_set: ProbeSet, options: RunOptions, out_dir: Path, reporter, tokenizer, loaded) -> RunContext:
    """Everything that can fail cheaply: the probes, the tokenizer, the backend's choice and the context check."""
    if not probe_set.probes:
        raise ProbeError("the probe set is empty")
    backend, tokenizer, rank = _open(options, tokenizer, loaded)
    ctx = RunContext(probe_set, options, out_dir, reporter, tokenizer, backend, rank)
    ctx.max_new_tokens = options.max_new_tokens or default_max_new_tokens(probe_set, tokenizer)
    ctx.limits = backend.context()
    longest_prompt = max(p.n_tokens for p in probe_set.probes)
    preflight = getattr(backend, "preflight", None)  # optional: a backend's own, finer rule (a server's engine)
    if preflight is not None and (note := preflight(longest_prompt, ctx.max_new_tokens)):
        ctx.notes.append(note)
    longest = longest_prompt + ctx.max_new_tokens
    note = check_context(ctx.limits, longest, options.yarn_factor)
    if note:
        ctx.notes.append(note)
        reporter.note(
            f"[yellow]warning:[/] lengths up to {longest:,} exceed the native context {ctx.limits.native:,} without --yarn"
        )
    original = _yarn_original_note(options, ctx.limits)
    if original:
        ctx.notes.append(original)
        reporter.note(f"[yellow]note:[/] {original}")
    requested = yarn_request(options)
    if isinstance(requested, dict) and requested["original_max_position_embeddings"] is None and ctx.limits.yarn:
        requested["original_max_position_embeddings"] = ctx.limits.yarn.get("original_max_position_embeddings")
    ctx.info = RunInfo(
        model=options.model,
        form=probe_set.form,
        lang=probe_set.lang,
        haystack=probe_set.haystack,
        haystack_hash=probe_set.haystack_hash,
        grid=grid_of(probe_set),
        seed=probe_set.seed,
        yarn=requested if isinstance(requested, dict) else ctx.limits.yarn,
        max_new_tokens=ctx.max_new_tokens,
        extra={"scorer": SCORER_LABELS["contains"], "yarn_request": requested, "status": "running"},
    )
    return ctx


def open_run_dir(ctx: RunContext) -> None:
    """Check the directory against the run's configuration, find what is done, choose what this process runs."""
    if ctx.rank:
        distributed.init_group(ctx.rank)
    ctx.done = prepare_out_dir(ctx.out_dir, ctx.info, ctx.options.overwrite, ctx.first_rank)
    ctx.complete = ctx.done.issuperset(p.probe_id for p in ctx.probe_set.probes)
    if ctx.first_rank:
        if not ctx.complete:  # before the weights load: what runs here is on disk from the start
            write_run_info(ctx.out_dir, ctx.info)
        _warn_of_rows(ctx)
    if ctx.rank:
        distributed.barrier()  # no rank starts before rank 0 has cleared an --overwrite
    pending = [p for p in ctx.probe_set.probes if p.probe_id not in ctx.done]
    if ctx.options.limit:
        pending = pending[: ctx.options.limit]
    if ctx.data_parallel:
        pending = distributed.shard(pending, ctx.rank.rank, ctx.rank.world)
    ctx.pending = pending


def _warn_of_rows(ctx: RunContext) -> None:
    """Say which rows of the directory resuming ignores (another configuration, repeats of one probe)."""
    from rich.markup import escape

    for warning in [] if ctx.options.overwrite else row_warnings(ctx.out_dir, ctx.info):
        ctx.notes.append(warning)
        ctx.reporter.note(f"[yellow]warning:[/] {escape(warning)}")


def load(ctx: RunContext) -> None:
    """The slow part (weights, a connection), then run.json with what the backend chose."""
    from kanana_longctx import __version__

    t0 = time.perf_counter()
    info = ctx.backend.load()
    ctx.load_seconds = time.perf_counter() - t0
    ctx.backend_info = info
    ctx.notes.extend(info.notes)
    extra = {**ctx.info.extra, **info.extra, "native_context": ctx.limits.native}
    if info.endpoint:
        extra["endpoint"] = info.endpoint
    ctx.info = dataclasses.replace(
        ctx.info,
        attention=info.attention,
        dtype=info.dtype,
        device=info.device,
        gpu_name=info.gpu_name,
        engine=info.engine,
        versions={**info.versions, "kanana-longctx": __version__},
        yarn=ctx.info.yarn if ctx.info.yarn is not None else info.yarn,
        extra=extra,
    )
    if ctx.first_rank:
        write_run_info(ctx.out_dir, ctx.info)


def loop(ctx: RunContext) -> None:
    """The backend runs the pending probes; each finished batch is scored and appended; then the ranks meet and
    the backend gives its memory back."""
    ctx.reporter.note(ctx.backend_info.headline or ctx.backend_info.describe())
    ctx.reporter.start(len(ctx.pending), 0, "NIAH")
    job = RunJob(ctx.probe_set, tuple(ctx.pending), ctx.max_new_tokens)
    t1 = time.perf_counter()
    try:
        with ResultsWriter(results_path(ctx.out_dir, ctx.rank, ctx.data_parallel)) as writer:
            ctx.stats = ctx.backend.run(job, RecordSink(writer, ctx.reporter, ctx.max_new_tokens))
    finally:
        ctx.reporter.stop()
    ctx.wall_seconds = time.perf_counter() - t1
    distributed.finish(ctx.out_dir, ctx.rank, ctx.data_parallel)
    ctx.figures = ctx.backend.close(bool(ctx.pending))


def finished(ctx: RunContext) -> RunSummary:
    """A directory that already holds every probe: no weights are loaded for zero probes. The summary names what
    computed the rows (run.json's backend facts); rank files a crashed data-parallel run left are merged first."""
    total = len(ctx.probe_set.probes)
    probes = "the probe" if total == 1 else f"all {total} probes"
    ctx.reporter.note(f"nothing to run: {probes} of {ctx.out_dir} already done; no weights loaded")
    if ctx.rank is None and distributed.rank_files(ctx.out_dir):
        distributed.merge_rank_results(ctx.out_dir)
    distributed.finish(ctx.out_dir, ctx.rank, ctx.data_parallel)
    ran = read_run_info(ctx.out_dir) or ctx.info
    ctx.backend_info = BackendInfo(
        engine=ran.engine or "unknown", device=ran.device, dtype=ran.dtype, attention=ran.attention,
        gpu_name=ran.gpu_name, endpoint=ran.extra.get("endpoint") or {}, yarn=ran.yarn,
    )
    ctx.stats = LoopStats(computed_flops=0.0)
    return summarize(ctx)


def summarize(ctx: RunContext) -> RunSummary:
    """Accuracy over every finished probe of the directory, and what this run did."""
    path = ctx.out_dir / RESULTS_NAME
    records = select_rows(load_results(path)[0], ctx.info.to_dict(), path)[0]  # this run's rows, each once
    info, stats, shape = ctx.backend_info, ctx.stats, ctx.backend_info.shape
    return RunSummary(
        out_dir=str(ctx.out_dir),
        total=len(ctx.probe_set.probes),
        skipped=sum(1 for p in ctx.probe_set.probes if p.probe_id in ctx.done),
        ran=len(ctx.pending),
        accuracy_by_length=accuracy_by_length(records),
        accuracy=sum(r.score for r in records) / len(records) if records else 0.0,
        by_length=length_accuracy(records),
        outcomes=outcome_counts(records),
        wall_seconds=ctx.wall_seconds,
        load_seconds=ctx.load_seconds,
        backend=info,
        effective_flops=sum(prefill_flops(shape, p.n_tokens) for p in ctx.pending) if shape else 0.0,
        computed_flops=stats.computed_flops,
        prefill_seconds=stats.prefill_seconds,
        decode_seconds=stats.decode_seconds,
        setup_seconds=stats.setup_seconds,
        peak_memory_gib=ctx.figures.peak_memory_gib,
        kv_rows=stats.kv_rows,
        chunk_tokens=stats.chunk_tokens,
        matmul_tflops=ctx.figures.matmul_tflops,
        notes=tuple(ctx.notes),
    )
