"""What the bench scripts share: GPU timing (wall-clock seconds of a call with the device synchronised around
it) and their output (one JSON line per result row as it comes, all rows as a JSON file at the end).

Usage: seconds = cuda_seconds(lambda: fast.prefill(ids, 0), repeats=3); cold = first_call_seconds(fn)
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
