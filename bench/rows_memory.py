"""GPU survey of KV rows against prefill chunks at 128K: what a second decode row costs in memory and buys in
decoding, and whether smaller prefill chunks (less activation memory) cost prefill speed.

Usage: python bench/rows_memory.py [--shape llama-8b] [--tokens 128000] [--configs 1x32768,2x16384,2x32768] [--json OUT]

Why: at 128K one KV row of the 8B model is ~16 GiB, so the run decodes one probe at a time, each step reading all
the weights for one token. A second row shares that read, but must fit beside the prefill's activations under
the 50 GiB peak target. Each config (rows x chunk tokens) prints: a full prefill of `--tokens`, the second half
over the cached first half, one decode step of all rows (milliseconds, and per row) and the peak allocated memory.
The first config also pays the cuDNN plans of the long rectangles in its full prefill: compare the suffix times.
"""

from __future__ import annotations

import argparse
import gc

import torch

from kanana_longctx.bench.timing import cuda_seconds, emit_row, first_call_seconds, write_rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shape", default="llama-8b")
    ap.add_argument("--tokens", type=int, default=128000)
    ap.add_argument("--configs", default="1x32768,2x16384,2x32768")
    ap.add_argument("--json", default=None)
    args = ap.parse_args()

    from kanana_longctx.bench.models import random_model
    from kanana_longctx.backends.local import finish_loaded
    from kanana_longctx.fastpath.llama import PrefixReusingLlama

    model = random_model(args.shape, device="cuda", dtype="bfloat16", yarn=True)
    loaded = finish_loaded(model, "cuda", "bfloat16", "cudnn", {"factor": 4.4, "original_max_position_embeddings": 32768})
    n = args.tokens
    ids = torch.randint(0, 49000, (n,), generator=torch.Generator().manual_seed(0))
    weights = torch.cuda.memory_allocated() / 2**30
    out = []
    for config in args.configs.split(","):
        rows, chunk = (int(x) for x in config.split("x"))
        gc.collect()
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
        fast = PrefixReusingLlama(loaded, max_tokens=n + 12, chunk_tokens=chunk, rows=rows)
        fast.prefill(ids[: n // 3], 0, row=0)  # compile the layer halves for this chunk size
        last = rows - 1
        full = first_call_seconds(lambda: fast.prefill(ids, 0, row=last))
        half = cuda_seconds(lambda: fast.prefill(ids[n // 2 :], n // 2, row=last), repeats=1)
        logits = fast.prefill(ids[n // 2 :], n // 2, row=last)
        for row in range(last):
            fast.kv.copy_prefix(last, row, 0, n)
        requests = [(row, logits, n, lambda tokens: False) for row in range(rows)]
        step = cuda_seconds(lambda: fast.decode_rows(requests, 11), repeats=1) / 10
        emit_row(out, {
            "rows": rows, "chunk": chunk, "tokens": n, "full_prefill_s": round(full, 3),
            "second_half_s": round(half, 3), "decode_step_ms": round(step * 1e3, 2),
            "decode_ms_per_row": round(step * 1e3 / rows, 2),
            "peak_gib": round(torch.cuda.max_memory_allocated() / 2**30, 2), "weights_gib": round(weights, 2),
        })
        fast = logits = requests = None  # free the KV rows before the next config allocates its own
    write_rows(out, args.json)


if __name__ == "__main__":
    main()
