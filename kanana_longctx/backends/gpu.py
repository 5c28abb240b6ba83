"""Measure the GPU's bf16 matmul rate, the ceiling the runner and the benchmark report their share of."""

from __future__ import annotations


def measure_matmul_tflops(n: int = 8192, repeats: int = 10) -> float:
    """Median-free quick estimate: mean of `repeats` n^3 bf16 products after warm-up, timed with CUDA events."""
    import torch

    if not torch.cuda.is_available():
        return 0.0
    a = torch.randn(n, n, device="cuda", dtype=torch.bfloat16)
    b = torch.randn(n, n, device="cuda", dtype=torch.bfloat16)
    for _ in range(3):
        a @ b
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    torch.cuda.synchronize()
    start.record()
    for _ in range(repeats):
        a @ b
    end.record()
    torch.cuda.synchronize()
    seconds = start.elapsed_time(end) / 1000 / repeats
    del a, b
    return 2 * n**3 / seconds / 1e12
