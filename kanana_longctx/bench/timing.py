"""What the bench scripts share: GPU timing (wall-clock seconds of a call with the device synchronised around
it) and their output (one JSON line per result row as it comes, all rows as a JSON file at the end).

Usage: seconds = cuda_seconds(lambda: fast.prefill(ids, 0), repeats=3); cold = first_call_seconds(fn)
       groups = profile_split(lambda: fast.prefill(ids, 0))  # GPU seconds per kernel group
       emit_row(rows, {"case": ..., "s": seconds}); write_rows(rows, args.json)
"""

from __future__ import annotations

import json
import time
from pathlib import Path


def cuda_seconds(fn, repeats: int = 3) -> float:
    """Median over `repeats` calls after one warm-up call (plans built, graphs compiled)."""
    import torch

    fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        torch.cuda.synchronize()
        times.append(time.perf_counter() - t)
    return sorted(times)[len(times) // 2]


def first_call_seconds(fn) -> float:
    """One call, cold: what a never-seen shape costs (cuDNN's plan build, compilation)."""
    import torch

    torch.cuda.synchronize()
    t = time.perf_counter()
    fn()
    torch.cuda.synchronize()
    return time.perf_counter() - t


def emit_row(rows: list, row: dict) -> None:
    """Print `row` as a JSON line now (a long survey shows progress, and a killed one keeps what it printed)."""
    print(json.dumps(row), flush=True)
    rows.append(row)


def write_rows(rows: list, path: str | None) -> None:
    """All rows as one indented JSON file, when a path was given."""
    if path:
        Path(path).write_text(json.dumps(rows, indent=1))


def kernel_group(name: str) -> str:
    """A GPU kernel's group in the profiles of the bench scripts, by its name."""
    low = name.lower()
    if any(k in low for k in ("cudnn", "fmha", "flash", "attention", "sdpa")):
        return "attention"
    if "merge" in low:
        return "merge"
    if any(k in low for k in ("gemm", "gemv", "nvjet", "cutlass", "sm90_xmma", "matmul")):
        return "matmul"
    if "triton" in low:
        return "fused elementwise (triton)"
    return "other elementwise / copies"


def kernel_times(prof) -> tuple[dict[str, float], list[tuple[float, int, str]]]:
    """A finished torch.profiler's CUDA kernels: GPU seconds per `kernel_group`, and (seconds, launches, name) for
    every kernel."""
    groups: dict[str, float] = {}
    timed = []
    for event in prof.key_averages():
        us = getattr(event, "device_time_total", None) or getattr(event, "cuda_time_total", 0)
        if us and event.key and not event.key.startswith("ProfilerStep"):
            g = kernel_group(event.key)
            groups[g] = groups.get(g, 0.0) + us / 1e6
            timed.append((us / 1e6, event.count, event.key))
    return groups, timed


def profile_split(fn, *, warm: bool = True) -> dict:
    """Where the GPU time of one call of `fn` goes (torch.profiler, CUDA kernels only): seconds per kernel group,
    the kernels launched, the GPU's busy seconds and the call's wall seconds. A warm-up call first, unless `warm`
    is False (the caller has warmed it up)."""
    import torch
    from torch.profiler import ProfilerActivity, profile

    if warm:
        fn()
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        t = time.perf_counter()
        fn()
        torch.cuda.synchronize()
        wall = time.perf_counter() - t
    groups, timed = kernel_times(prof)
    kernels = sum(count for _, count, _ in timed)
    busy = sum(groups.values())
    out = {g: round(s, 4) for g, s in sorted(groups.items(), key=lambda kv: -kv[1])}
    out["kernels"] = kernels
    out["gpu_busy_s"] = round(busy, 4)
    out["wall_s"] = round(wall, 4)
    return out
