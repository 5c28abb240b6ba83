"""Where a fast-engine grid run's time goes: our runner on a README grid with every phase timed (synchronised),
suffix prefills binned by their length, and optionally a torch.profiler window over some batches.

Usage: python bench/grid_phases.py --shape kanana-2.1b --preset readme-32k --tokenizer DIR --max-memory 50
                                   [--profile-batches 20:28] [--no-sync] [--json OUT.json]

Phases: copies between KV rows, the shared haystack stream, the common parts below a needle ("extends"), the
suffix prefills (`prefill_rows`: each call's tokens, cached prefix and seconds; TFLOP/s on the FLOPs the engine
computes, binned by the call's tokens), the decoding (`decode_rows`: graph replays and the host loop), and what is
left of the backend's decode time (scoring and the fsynced results file). The timers synchronise the GPU, so the
phases add up to a little more than an untimed run; with `--no-sync` they do not, and the phases are host seconds
instead. The profile window reports the GPU's idle gaps by length (`gap_histogram`): many short ones mean the host
launches too slowly, a few long ones are compilations, plans or waiting copies. This is a diagnosis for
docs/performance.md, not the benchmark (`kanana-longctx bench`).
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import torch

BINS = (512, 2048, 8192, 16384, 1 << 30)  # suffix tokens of a prefill_rows call, upper bounds


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shape", default="kanana-2.1b")
    ap.add_argument("--preset", default="readme-32k")
    ap.add_argument("--tokenizer", default="smollm2")
    ap.add_argument("--max-memory", type=float, default=50.0)
    ap.add_argument("--profile-batches", default="", help="a:b, profile batches [a, b) (kernel groups, top kernels)")
    ap.add_argument("--no-sync", action="store_true",
                    help="timers do not synchronise: phases are host seconds, and the sync after each batch's "
                         "suffixes is timed on its own (how long the host waited for the GPU)")
    ap.add_argument("--json", default=None)
    args = ap.parse_args()

    from kanana_longctx.backends.fast import FastBackend
    from kanana_longctx.bench.grid_bench import BenchRequest, _NotesReporter, prepare_bench
    from kanana_longctx.bench.timing import kernel_times
    from kanana_longctx.fastpath.decode import GraphDecoder
    from kanana_longctx.fastpath.kv import KVBuffer
    from kanana_longctx.fastpath.llama import PrefixReusingLlama
    from kanana_longctx.options import RunOptions
    from kanana_longctx.plan.flops import ModelShape, span_flops
    from kanana_longctx.run.check import default_max_new_tokens
    from kanana_longctx.run.runner import execute

    request = BenchRequest(shape=args.shape, preset=args.preset, tokenizer=args.tokenizer, naive_subset=0,
                           max_memory_gib=args.max_memory, engine="fast")
    probe_set, grid_name, peak, loaded, tokenizer = prepare_bench(request, print)
    shape = ModelShape.from_config(loaded.model.config)
    device_sync = torch.cuda.synchronize if loaded.device == "cuda" else (lambda: None)
    sync = (lambda: None) if args.no_sync else device_sync
    seconds: dict[str, float] = defaultdict(float)
    calls: dict[str, int] = defaultdict(int)
    suffix_calls: list[tuple[int, float, float]] = []  # (tokens, seconds, computed FLOPs)
    steps = [0]
    depth = [0]

    def timed(name, fn, record=None):
        def wrapper(*a, **k):
            if depth[0]:
                return fn(*a, **k)
            depth[0] += 1
            sync()
            t = time.perf_counter()
            try:
                out = fn(*a, **k)
                sync()
            finally:
                depth[0] -= 1
            dt = time.perf_counter() - t
            seconds[name] += dt
            calls[name] += 1
            if record:
                record(a, k, out, dt)
            return out
        return wrapper

    def record_suffixes(a, k, out, dt):
        requests = a[1]
        tokens = sum(len(ids) for ids, _, _ in requests)
        flops = sum(span_flops(shape, start, len(ids), logits=True, trimmed=True) for ids, start, _ in requests)
        suffix_calls.append((tokens, dt, flops))

    def record_steps(a, k, out, dt):
        steps[0] += max(len(o) for o in out) - 1

    KVBuffer.copy_prefix = timed("copies", KVBuffer.copy_prefix)
    PrefixReusingLlama.prefill_stream = timed("stream", PrefixReusingLlama.prefill_stream)
    PrefixReusingLlama.prefill = timed("extends", PrefixReusingLlama.prefill)
    PrefixReusingLlama.prefill_rows = timed("suffixes", PrefixReusingLlama.prefill_rows, record_suffixes)
    PrefixReusingLlama.decode_rows = timed("decode_rows", PrefixReusingLlama.decode_rows, record_steps)
    GraphDecoder.__init__ = timed("decoder init (check, first capture)", GraphDecoder.__init__)

    profiler = None
    window = tuple(int(x) for x in args.profile_batches.split(":")) if args.profile_batches else None
    batch_index = [0]
    window_wall = [0.0, 0.0]  # start, seconds

    def stop_profiler():
        device_sync()
        profiler.__exit__(None, None, None)
        window_wall[1] = time.perf_counter() - window_wall[0]
        window_wall[0] = 0.0
    original_prefill = FastBackend._prefill

    def counting_prefill(run, batch, device):
        nonlocal profiler
        if window and batch_index[0] == window[0]:
            activity = torch.profiler.ProfilerActivity.CUDA if loaded.device == "cuda" else torch.profiler.ProfilerActivity.CPU
            profiler = torch.profiler.profile(activities=[activity])
            profiler.__enter__()
            window_wall[0] = time.perf_counter()
        if window and batch_index[0] == window[1] and profiler is not None:
            stop_profiler()
        batch_index[0] += 1
        return original_prefill(run, batch, device)

    FastBackend._prefill = staticmethod(counting_prefill)
    if args.no_sync:
        from kanana_longctx.backends import gpu

        gpu.synchronize = timed("batch-end sync wait", gpu.synchronize)
    max_new = default_max_new_tokens(probe_set, tokenizer)
    options = RunOptions(model=f"random:{args.shape}", max_new_tokens=max_new, max_memory_gib=args.max_memory,
                         engine="fast")
    with tempfile.TemporaryDirectory() as tmp:
        ran = execute(probe_set, options, Path(tmp) / "grid", loaded=loaded, tokenizer=tokenizer,
                      reporter=_NotesReporter(print))
    if profiler is not None and window_wall[0]:
        stop_profiler()
    out = {
        "grid": grid_name, "probes": len(probe_set.probes), "wall_s": round(ran.wall_seconds, 2),
        "setup_s": round(ran.setup_seconds, 2), "prefill_s": round(ran.prefill_seconds, 2),
        "decode_s": round(ran.decode_seconds, 2), "computed_flops": ran.computed_flops,
        "phases_s": {k: round(v, 2) for k, v in seconds.items()}, "calls": dict(calls), "decode_steps": steps[0],
        "batches": batch_index[0],
    }
    out["decode_ms_per_step"] = round(seconds["decode_rows"] / max(1, steps[0]) * 1e3, 2)
    out["decode_outside_decode_rows_s"] = round(ran.decode_seconds - seconds["decode_rows"], 2)
    bins = []
    lo = 0
    for hi in BINS:
        picked = [c for c in suffix_calls if lo < c[0] <= hi]
        if picked:
            s, f = sum(c[1] for c in picked), sum(c[2] for c in picked)
            bins.append({"tokens": f"{lo + 1}-{hi if hi < 1 << 30 else 'max'}", "calls": len(picked),
                         "seconds": round(s, 2), "tflops": round(f / s / 1e12, 0)})
        lo = hi
    out["suffix_bins"] = bins
    if profiler is not None:
        out["profile_gaps"] = gap_histogram(profiler, loaded.device)
        print(json.dumps(out["profile_gaps"]), flush=True)
        groups, kernels = kernel_times(profiler)
        out["profile_window_wall_s"] = round(window_wall[1], 3)
        out["profile_gpu_busy_s"] = round(sum(groups.values()), 3)
        out["profile_groups_s"] = {k: round(v, 3) for k, v in sorted(groups.items(), key=lambda kv: -kv[1])}
        out["profile_top_kernels"] = [(round(s, 3), n, name[:90]) for s, n, name in sorted(kernels, reverse=True)[:25]]
    print(json.dumps(out, indent=1))
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=1))


GAP_BINS_US = (5, 20, 100, 1000, 10000, 100000, float("inf"))


def gap_histogram(prof, device: str) -> list[dict]:
    """Idle stretches of the GPU between its kernels, copies and memsets in a finished profile, by length: many
    short gaps mean the host launches too slowly; a few long ones are syncs, plans being built or host work. (On
    a CPU run, between the profiled ops: a smoke test of the script only.)"""
    kind = torch.autograd.DeviceType.CUDA if device == "cuda" else torch.autograd.DeviceType.CPU
    spans = sorted(
        (e.start_ns(), e.start_ns() + e.duration_ns())
        for e in prof.profiler.kineto_results.events()
        if e.device_type() == kind and e.duration_ns() > 0
    )
    gaps = []
    end = None
    for a, b in spans:
        if end is not None and a > end:
            gaps.append((a - end) / 1e3)
        end = b if end is None else max(end, b)
    rows = []
    lo = 0.0
    for hi in GAP_BINS_US:
        picked = [g for g in gaps if lo <= g < hi]
        rows.append({"gap_us": f"{lo:g}-{hi:g}", "count": len(picked), "seconds": round(sum(picked) / 1e6, 3)})
        lo = hi
    if spans:
        rows.append({"span_s": round((end - spans[0][0]) / 1e9, 3), "idle_s": round(sum(gaps) / 1e6, 3)})
    return rows


if __name__ == "__main__":
    main()
