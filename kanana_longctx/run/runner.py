"""Run a probe set on a model, resumably: `run_niah(probe_set, options, out_dir, console)`.

Order of work: validate the run directory and the lengths against the model's context (config only, no
weights), load the model once, then run the pending probes on the fast prefix-reusing path (Llama family) or the
plain transformers loop, appending each finished probe to results.jsonl (fsynced) so a kill -9 loses at most the
probe or batch in flight. The same command on the same directory resumes; a different configuration refuses.
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

from kanana_longctx.errors import ProbeError
from kanana_longctx.hub import resolve_model
from kanana_longctx.probes.spec import ProbeSet
from kanana_longctx.results import RESULTS_NAME, ResultsWriter, RunInfo, load_results, write_run_info
from kanana_longctx.backends.fast import run_fast, run_hf, stop_token_ids
from kanana_longctx.options import RunOptions
from kanana_longctx.run.reporting import NullReporter, RichReporter, RunSummary, accuracy_by_length, render_summary
from kanana_longctx.run.rundir import prepare_out_dir
from kanana_longctx.scoring import SCORER_LABELS


def yarn_request(options: RunOptions) -> dict | str:
    """How YaRN was asked for: explicit parameters, forced off, or as the model's config says."""
    if options.yarn is True:
        return {
            "factor": options.yarn_factor,
            "original_max_position_embeddings": options.yarn_original,
            "beta_fast": options.yarn_beta_fast,
            "beta_slow": options.yarn_beta_slow,
        }
    return "off" if options.yarn is False else "config"


def grid_of(probe_set: ProbeSet) -> dict:
    return {
        "lengths": sorted({p.length for p in probe_set.probes}),
        "depths": sorted({p.depth for p in probe_set.probes}),
        "probes": len(probe_set.probes),
    }


def default_max_new_tokens(probe_set: ProbeSet, tokenizer) -> int:
    """Enough for the answer plus a short phrase: retform completes a prefix, qaform may restate the question."""
    longest = max((len(tokenizer.encode(p.expected, add_special_tokens=False)) for p in probe_set.probes), default=8)
    return longest + (4 if probe_set.form == "retform" else 16)


def run_niah(probe_set: ProbeSet, options: RunOptions, out_dir: Path, console, *, tokenizer=None) -> RunSummary:
    """CLI entry: run with rich progress and print the end-of-run table."""
    from kanana_longctx.run.distributed import rank_from_env

    rank = rank_from_env()
    first = rank is None or rank.rank == 0
    reporter = RichReporter(console) if first else NullReporter()  # one progress bar, not one per rank
    summary = execute(probe_set, options, Path(out_dir), reporter=reporter, tokenizer=tokenizer)
    if first:
        render_summary(console, summary)
    return summary


def execute(probe_set: ProbeSet, options: RunOptions, out_dir: Path, *, reporter=None, tokenizer=None, loaded=None):
    """Run the pending probes of `probe_set`; return a RunSummary. `loaded` lets the benchmark pass its own model."""
    from kanana_longctx import __version__
    from kanana_longctx.backends.local import load_config, load_model

    reporter = reporter or NullReporter()
    if not probe_set.probes:
        raise ProbeError("the probe set is empty")
    source = resolve_model(options.model, options.revision) if loaded is None else None
    if tokenizer is None and source is not None:
        from kanana_longctx.tokenizer import load_tokenizer

        tokenizer = load_tokenizer(source, trust_remote_code=options.trust_remote_code)
    max_new = options.max_new_tokens or default_max_new_tokens(probe_set, tokenizer)

    # Context check before any weight is loaded: a bad length must cost seconds, not a model load.
    from kanana_longctx.yarn.live import context_limits, yarn_in_config

    if loaded is None:
        config, yarn = load_config(source, options)
    else:
        config, yarn = loaded.model.config, yarn_in_config(loaded.model.config)
    native, maximum = context_limits(config, yarn)
    longest = max(p.n_tokens for p in probe_set.probes) + max_new
    notes: list[str] = []
    # Without YaRN a model can be run past its native context (that is what shows YaRN's effect), but not past
    # what even the default YaRN factor would reach.
    reach = maximum if yarn else int(native * options.yarn_factor)
    if reach and longest > reach:
        what = "with YaRN" if yarn else f"even with YaRN x{options.yarn_factor:g}"
        raise ProbeError(f"probes need {longest:,} positions; the model addresses {reach:,} {what}")
    if native and longest > native and not yarn:
        notes.append(f"lengths exceed the model's native context of {native:,} tokens without YaRN")
        reporter.note(f"[yellow]warning:[/] lengths up to {longest:,} exceed the native context {native:,} without --yarn")

    requested_yarn = yarn_request(options)
    info = RunInfo(
        model=options.model,
        form=probe_set.form,
        lang=probe_set.lang,
        haystack=probe_set.haystack,
        haystack_hash=probe_set.haystack_hash,
        grid=grid_of(probe_set),
        seed=probe_set.seed,
        yarn=requested_yarn if isinstance(requested_yarn, dict) else yarn,
        max_new_tokens=max_new,
        extra={"scorer": SCORER_LABELS["contains"], "yarn_request": requested_yarn},
    )
    from kanana_longctx.run import distributed as sharding

    rank = sharding.rank_from_env()
    first_rank = rank is None or rank.rank == 0
    # Tensor parallel ranks run every probe together (generate is collective); only data parallel ranks shard.
    data_parallel = rank is not None and options.tp <= 1
    if rank:
        sharding.init_group(rank)
    done = prepare_out_dir(out_dir, info, options.overwrite, first_rank)
    if rank:
        sharding.barrier()  # no rank starts before rank 0 has cleared an --overwrite
    pending = [p for p in probe_set.probes if p.probe_id not in done]
    if options.limit:
        pending = pending[: options.limit]
    if data_parallel:
        pending = sharding.shard(pending, rank.rank, rank.world)

    t0 = time.perf_counter()
    if loaded is None:
        if data_parallel and options.device != "cpu":
            import torch

            if torch.cuda.is_available():
                torch.cuda.set_device(rank.local_rank % torch.cuda.device_count())
        loaded = load_model(source, options)
    load_seconds = time.perf_counter() - t0
    from kanana_longctx.fastpath.llama import supports_fast_path

    fast_ok, why = supports_fast_path(loaded.model)
    if options.tp > 1:
        fast_ok, why = False, "the fast path needs the whole model on one device (--tp uses the transformers loop)"
    engine = "fast" if options.engine in ("auto", "fast") and fast_ok else "hf"
    if options.engine == "fast" and not fast_ok:
        raise ProbeError(f"--engine fast: {why}")
    if engine == "hf" and options.engine == "auto":
        notes.append(f"plain transformers loop: {why}")
    notes.extend(loaded.notes)
    import torch

    versions = {"torch": torch.__version__, "kanana-longctx": __version__}
    import transformers

    versions["transformers"] = transformers.__version__
    info = dataclasses.replace(
        info,
        attention=loaded.attention,
        dtype=loaded.dtype,
        device=loaded.device,
        gpu_name=loaded.gpu_name,
        engine=engine,
        versions=versions,
        yarn=info.yarn if info.yarn is not None else loaded.yarn,
        extra={**info.extra, "rope_attention_factor": loaded.rope_attention_factor, "native_context": native},
    )
    if first_rank:
        write_run_info(out_dir, info)

    if loaded.device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    stop_ids = stop_token_ids(tokenizer, loaded.model)
    reporter.note(
        f"model {options.model} on {loaded.gpu_name or loaded.device} ({loaded.dtype}), attention {loaded.attention},"
        f" engine {engine}, YaRN {'on ' + str(loaded.yarn.get('factor')) if loaded.yarn else 'off'}"
        f" (rotary attention factor {loaded.rope_attention_factor:.6f})"
    )
    reporter.start(len(pending), 0, "NIAH")
    t1 = time.perf_counter()
    run_fn = run_fast if engine == "fast" else run_hf
    try:
        if rank and not data_parallel and not first_rank:
            writer_path = out_dir / f".tp-rank{rank.rank}.jsonl"  # tensor parallel: rank 0 writes the results
        else:
            writer_path = out_dir / (rank.results_name if data_parallel else RESULTS_NAME)
        with ResultsWriter(writer_path) as writer:
            stats = run_fn(loaded, probe_set, pending, tokenizer, stop_ids, max_new, options, writer, reporter)
    finally:
        reporter.stop()
    if loaded.device == "cuda":
        torch.cuda.synchronize()
    wall = time.perf_counter() - t1
    peak_gib = torch.cuda.max_memory_allocated() / 2**30 if loaded.device == "cuda" else 0.0
    if rank and not data_parallel:
        (out_dir / f".tp-rank{rank.rank}.jsonl").unlink(missing_ok=True)
    if rank:
        sharding.barrier()  # every rank has finished its shard
        if first_rank and data_parallel:
            sharding.merge_rank_results(out_dir)
        sharding.barrier()  # the merged results.jsonl is complete for every rank's summary
        sharding.destroy_group()
    if loaded.device == "cuda":
        # The fast engine's KV buffer and CUDA-graph pools sit in a reference cycle: free them now, not at some
        # later collection, so the caller (or the next run in this process) gets the memory back.
        import gc

        gc.collect()
        torch.cuda.empty_cache()

    from kanana_longctx.plan.flops import ModelShape, prefill_flops

    shape = ModelShape.from_config(loaded.model.config)
    records, _ = load_results(out_dir / RESULTS_NAME)
    by_length = accuracy_by_length(records)
    return RunSummary(
        out_dir=str(out_dir),
        total=len(probe_set.probes),
        skipped=sum(1 for p in probe_set.probes if p.probe_id in done),
        ran=len(pending),
        accuracy_by_length=by_length,
        accuracy=sum(r.score for r in records) / len(records) if records else 0.0,
        wall_seconds=wall,
        load_seconds=load_seconds,
        engine=engine,
        attention=loaded.attention,
        device=loaded.device,
        dtype=loaded.dtype,
        gpu_name=loaded.gpu_name,
        effective_flops=sum(prefill_flops(shape, p.n_tokens) for p in pending),
        computed_flops=stats.computed_flops,
        prefill_seconds=stats.prefill_seconds,
        decode_seconds=stats.decode_seconds,
        setup_seconds=stats.setup_seconds,
        peak_memory_gib=peak_gib,
        kv_rows=stats.kv_rows,
        chunk_tokens=stats.chunk_tokens,
        matmul_tflops=_matmul_rate(loaded.device, bool(pending)),
        notes=tuple(notes),
    )


def _matmul_rate(device: str, ran: bool) -> float:
    """The bf16 matmul rate, measured once after a GPU run (~0.1 s), so the summary can say its share of peak."""
    if device != "cuda" or not ran:
        return 0.0
    from kanana_longctx.backends.gpu import measure_matmul_tflops

    return measure_matmul_tflops()


