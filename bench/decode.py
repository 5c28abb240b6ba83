"""GPU survey of the CUDA-graph decode step (kanana_longctx.run.decode_graph): one fused masked SDPA call over the
capacity vs split-KV attention, for the row counts and capacities of the README grids.

Usage: python bench/decode.py [--shape llama-8b] [--cases 1x131072,6x32768,6x8192] [--json OUT.json]

Prints milliseconds per decode step (all rows together) and the KV + weight bytes a step must read, as GB/s.
"""

from __future__ import annotations

import argparse
import json
import time

import torch


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shape", default="llama-8b")
    ap.add_argument("--cases", default="1x131072,6x32768,6x8192")
    ap.add_argument("--json", default=None)
    args = ap.parse_args()

    from kanana_longctx.bench.models import random_model
    from kanana_longctx.run.decode_graph import GraphDecoder
    from kanana_longctx.run.engine import finish_loaded
    from kanana_longctx.run.fast_llama import PrefixReusingLlama, row_kv_bytes

    model = random_model(args.shape, device="cuda", dtype="bfloat16", yarn=True)
    loaded = finish_loaded(model, "cuda", "bfloat16", "cudnn", {"factor": 4.4, "original_max_position_embeddings": 32768})
    weights = sum(p.numel() * p.element_size() for p in model.parameters()) - model.model.embed_tokens.weight.nbytes
    rows_out = []
    steps = 32
    for case in args.cases.split(","):
        rows, tokens = (int(x) for x in case.split("x"))
        fast = PrefixReusingLlama(loaded, max_tokens=tokens + steps + 8, rows=rows)
        position = tokens - 8  # every row near the end of its capacity: the worst case of a bucket
        for label, splits in (("one call", 1), ("split-KV", None)):
            decoder = GraphDecoder(fast, splits=splits)
            requests = [(r, 1, position, lambda out: False) for r in range(rows)]
            decoder.generate_rows(requests, 4)  # capture the bucket's graph
            torch.cuda.synchronize()
            t = time.perf_counter()
            decoder.generate_rows(requests, steps + 1)
            torch.cuda.synchronize()
            ms = (time.perf_counter() - t) / steps * 1e3
            capacity = decoder.bucket(position + steps + 1)
            read = weights + rows * row_kv_bytes(model.config, capacity)
            row = {"rows": rows, "capacity": capacity, "variant": label, "splits": decoder.splits(capacity),
                   "ms_per_step": round(ms, 2), "GB_per_s": round(read / ms / 1e6, 0)}
            print(json.dumps(row), flush=True)
            rows_out.append(row)
        fast = None
        torch.cuda.empty_cache()
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows_out, f, indent=1)


if __name__ == "__main__":
    main()
