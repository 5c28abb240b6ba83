"""GPU timing for the bench scripts: wall-clock seconds of a call with the device synchronised around it.

Usage: seconds = cuda_seconds(lambda: fast.prefill(ids, 0), repeats=3); cold = first_call_seconds(fn)
"""

from __future__ import annotations

import time


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
