"""What an in-process run measures on the GPU: free and allocated memory, the peak, the bf16 matmul rate (torch
inside functions; every helper is a no-op or zero off CUDA).

Usage: budget = run_budget_bytes(total_bytes(), allocated_bytes(), free_gpu_bytes()); peak_memory_gib("cuda")
"""

from __future__ import annotations


def free_gpu_bytes() -> int:
    """Free GPU memory, counting what PyTorch's caching allocator holds without using it: after an earlier run
    in the same process (a benchmark's second grid) that memory is ours to use, though the driver reports it as
    taken; without it the second run would get fewer decode rows than the first."""
    import torch

    free, _ = torch.cuda.mem_get_info()
    return free + torch.cuda.memory_reserved() - torch.cuda.memory_allocated()


def total_bytes() -> int:
    import torch

    _, total = torch.cuda.mem_get_info()
    return total


def allocated_bytes() -> int:
    """Bytes held by live tensors (the weights, before a run's buffers)."""
    import torch

    return torch.cuda.memory_allocated()


def synchronize(device: str) -> None:
    if device == "cuda":
        import torch

        torch.cuda.synchronize()


def reset_peak(device: str) -> None:
    if device == "cuda":
        import torch

        torch.cuda.reset_peak_memory_stats()


def peak_memory_gib(device: str) -> float:
    """The most memory tensors held since `reset_peak`."""
    if device != "cuda":
        return 0.0
    import torch

    return torch.cuda.max_memory_allocated() / 2**30


def release_memory(device: str) -> None:
    """Hand a finished run's memory back now: the fast engine's KV buffer and CUDA-graph pools sit in a reference
    cycle, so without a collection they would stay until some later one, and the caller (or the next run in this
    process) would find less memory free."""
    if device != "cuda":
        return
    import gc

    import torch

    gc.collect()
    torch.cuda.empty_cache()


def matmul_rate(device: str, ran: bool) -> float:
    """The bf16 matmul rate, measured once after a GPU run that ran probes (~0.1 s), so the summary can say its
    share of peak; 0.0 otherwise."""
    if device != "cuda" or not ran:
        return 0.0
    return measure_matmul_tflops()


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
