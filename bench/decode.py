"""GPU survey of the CUDA-graph decode step (kanana_longctx.fastpath.decode, kernels.split_kv): one fused masked SDPA call over the
capacity vs split-KV attention with masked keys (a graph per capacity bucket) vs split-KV reading live keys only
(one graph, splits cut per batch), the same on the engine's fused layer halves, and on the fused layers with the
Triton split-KV kernels (kernels.decode_triton: the default), for the row counts and buffer lengths of the README
grids.

Usage: python bench/decode.py [--shape llama-8b] [--cases 1x131072,6x32768,6x8192] [--layouts end,spread,quarter]
                              [--variants "live keys,live keys fused"] [--splits 0,16] [--profile] [--json OUT.json]

Three layouts per case: every row near the end of the buffer (the worst case of a bucket), rows spread over it
(row r of n at (r + 1) / n of it: a batch of a grid, whose probes differ in length), and every row at a quarter of
it (a batch of short probes in a long run's buffer). Prints milliseconds per decode step (all rows together), the
weight + live KV bytes a step must read as GB/s, and the first call's extra cost over its steps: the graph capture
(each masked bucket pays it once; the live-key decoder once for all batches). `--splits` adds runs of the
split-KV variants with that many splits (0: the decoder's own choice); `--profile` adds where a step's GPU time
goes (kernel groups, kernels per step).
"""

from __future__ import annotations

import argparse

import torch

from kanana_longctx.bench.timing import cuda_seconds, emit_row, first_call_seconds, profile_split, write_rows

VARIANTS = {  # label: (splits: 1 = one masked call, None = split-KV; live keys only; on the fused layers; Triton)
    "one call": (1, False, False, False),
    "split-KV, masked": (None, False, False, False),
    "live keys": (None, True, False, False),
    "live keys fused": (None, True, True, False),
    "triton fused": (None, True, True, True),
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shape", default="llama-8b")
    ap.add_argument("--cases", default="1x131072,6x32768,6x8192")
    ap.add_argument("--layouts", default="end,spread,quarter")
    ap.add_argument("--variants", default=",".join(VARIANTS), help="comma list of: " + ", ".join(VARIANTS))
    ap.add_argument("--splits", default="0", help="comma list of split counts for the split-KV variants (0: auto)")
    ap.add_argument("--profile", action="store_true", help="also profile each step's kernels")
    ap.add_argument("--json", default=None)
    args = ap.parse_args()

    from kanana_longctx.backends.local import finish_loaded
    from kanana_longctx.bench.models import random_model
    from kanana_longctx.fastpath.decode import GraphDecoder
    from kanana_longctx.fastpath.llama import PrefixReusingLlama
    from kanana_longctx.plan.dims import ModelDims
    from kanana_longctx.plan.memory import row_kv_bytes

    model = random_model(args.shape, device="cuda", dtype="bfloat16", yarn=True)
    loaded = finish_loaded(model, "cuda", "bfloat16", "cudnn", {"factor": 4.4, "original_max_position_embeddings": 32768})
    weights = sum(p.numel() * p.element_size() for p in model.parameters())  # tied embeddings counted once
    if model.lm_head.weight is not model.model.embed_tokens.weight:
        weights -= model.model.embed_tokens.weight.nbytes  # a step reads only its tokens' rows of it
    rows_out = []
    steps = 32
    for case in args.cases.split(","):
        rows, tokens = (int(x) for x in case.split("x"))
        fast = PrefixReusingLlama(loaded, max_tokens=tokens + steps + 8, rows=rows)
        layouts = {
            "end": [tokens - 8] * rows,
            "spread": [tokens * (r + 1) // rows - 8 for r in range(rows)],
            "quarter": [tokens // 4] * rows,
        }
        fast.fused.finish_background_compile()
        for layout, positions in layouts.items():
            if layout not in args.layouts.split(",") or (layout == "spread" and rows == 1):
                continue
            for label in args.variants.split(","):
                base_splits, varlen, fused, triton = VARIANTS[label]
                for forced in [int(x) for x in args.splits.split(",")] if base_splits is None else [0]:
                    splits = base_splits if base_splits is not None else (forced or None)
                    decoder = GraphDecoder(fast.parts, fast.kv, splits=splits, varlen=varlen,
                                           layers=fast.fused if fused else None, triton=triton)
                    requests = [(r, 1, positions[r], lambda out: False) for r in range(rows)]
                    run = lambda: decoder.generate_rows(requests, steps + 1)  # noqa: E731
                    first = first_call_seconds(run)  # captures the graph
                    ms = cuda_seconds(run, repeats=3) / steps * 1e3
                    capacity = decoder.bucket(max(positions) + steps + 1)
                    read = weights + sum(row_kv_bytes(ModelDims.from_config(model.config), p + steps) for p in positions)
                    row = {"rows": rows, "capacity": capacity, "layout": layout, "variant": label,
                           "splits": decoder.splits(capacity), "ms_per_step": round(ms, 2),
                           "GB_per_s": round(read / ms / 1e6, 0), "capture_ms": round(first * 1e3 - steps * ms, 1)}
                    if args.profile:
                        split = profile_split(run, warm=False)
                        row["per_step_ms"] = {k: round(v * 1e3 / steps, 3) if isinstance(v, float) else v // steps
                                              for k, v in split.items()}
                    emit_row(rows_out, row)
        fast = None
        torch.cuda.empty_cache()
    write_rows(rows_out, args.json)


if __name__ == "__main__":
    main()
