"""Diagnose per-shape costs: first call vs repeat call of the split attention for never-seen shapes, per kernel,
and the runner's per-probe seconds on the first probes of a grid.

Usage: python bench/shape_cost.py [--probes 24]
"""

from __future__ import annotations

import argparse
import time

import torch

from kanana_longctx.kernels.attention import attend


def first_vs_repeat(kernel: str, shapes) -> None:
    for q_len, prefix in shapes:
        q = torch.randn(1, 32, q_len, 128, device="cuda", dtype=torch.bfloat16)
        k = torch.randn(1, 8, prefix + q_len, 128, device="cuda", dtype=torch.bfloat16)
        v = torch.randn_like(k)
        times = []
        for _ in range(3):
            torch.cuda.synchronize()
            t = time.perf_counter()
            attend(q, k, v, q_start=prefix, kernel=kernel, scale=128**-0.5)
            torch.cuda.synchronize()
            times.append(time.perf_counter() - t)
        print(f"{kernel:6s} q={q_len:6d} prefix={prefix:6d}  first {times[0]*1e3:8.1f} ms  then {times[1]*1e3:7.1f} {times[2]*1e3:7.1f} ms", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--probes", type=int, default=24)
    args = parser.parse_args()
    shapes = [(3000 + 37 * i, 9000 + 53 * i) for i in range(4)]
    for kernel in ("cudnn", "fa2"):
        first_vs_repeat(kernel, shapes)
    from pathlib import Path
    import tempfile

    from kanana_longctx.bench.models import random_model
    from kanana_longctx.hub import resolve_model
    from kanana_longctx.probes.build import ProbeRequest, build_probe_set
    from kanana_longctx.probes.grid import resolve_grid
    from kanana_longctx.results import load_results
    from kanana_longctx.backends.local import finish_loaded
    from kanana_longctx.options import RunOptions
    from kanana_longctx.run.runner import execute
    from kanana_longctx.tokenizer import load_tokenizer

    tok = load_tokenizer(resolve_model(".dev/smoltok"))
    ps = build_probe_set(ProbeRequest.from_grid(resolve_grid(preset="readme-32k"), form="retform"), tok)
    model = random_model("llama-8b", device="cuda", yarn=True)
    for kernel in ("cudnn", "fa2"):
        loaded = finish_loaded(model, "cuda", "bfloat16", kernel, {"factor": 4.4, "original_max_position_embeddings": 32768})
        with tempfile.TemporaryDirectory() as tmp:
            t = time.perf_counter()
            s = execute(ps, RunOptions(model="random", limit=args.probes), Path(tmp), loaded=loaded, tokenizer=tok)
            records, _ = load_results(Path(tmp))
            print(kernel, "wall", round(s.wall_seconds, 2), "total", round(time.perf_counter() - t, 2), flush=True)
            print(" per probe (length, prefill tokens, new tokens, s):", [(r.length, r.prefill_tokens, r.new_tokens, r.seconds) for r in records][:12], flush=True)


if __name__ == "__main__":
    main()
