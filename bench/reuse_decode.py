"""Where a reuse-engine decoding step's time goes, on one GPU: milliseconds per greedy step of one row alone
(PrefixCache.greedy) against a DecodeGroup of N rows, with and without the bottom-right prefix attention, and a
profile of one grouped step (top CUDA kernels).

Usage: python bench/reuse_decode.py [--shape kanana-moe-a3b] [--rows 6] [--tokens 32768] [--steps 17]
Prints a table; numbers only, no thresholds. Needs CUDA (random bf16 weights, kanana_longctx.bench.models).
"""

from __future__ import annotations

import argparse

import torch

from kanana_longctx.backends.hfcache import DecodeGroup, PrefixCache
from kanana_longctx.bench.models import random_model
from kanana_longctx.bench.timing import first_call_seconds as _time
from kanana_longctx.kernels.choice import decode_sdpa_context, sdpa_context
from kanana_longctx.kernels.hf_prefix import model_attention, prefix_attention


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--shape", default="kanana-moe-a3b")
    parser.add_argument("--rows", type=int, default=6)
    parser.add_argument("--tokens", type=int, default=32768)
    parser.add_argument("--steps", type=int, default=17)
    args = parser.parse_args()
    model = random_model(args.shape, device="cuda", dtype="bfloat16", yarn=True)
    gen = torch.Generator().manual_seed(0)
    lengths = [args.tokens - i * (args.tokens // (2 * args.rows)) for i in range(args.rows)]
    prompts = [torch.randint(0, 1000, (n,), generator=gen).tolist() for n in lengths]
    never = lambda out: False  # noqa: E731
    print(f"{args.shape}: {args.rows} rows of {lengths[-1]}..{lengths[0]} tokens, {args.steps} steps")
    cuda = torch.device("cuda")
    for prefix, forced in ((True, "cudnn"), (False, "sdpa"), (False, "cudnn"), (False, "decode")):
        ctx = decode_sdpa_context("cudnn", cuda) if forced == "decode" else sdpa_context(forced, cuda)
        with torch.inference_mode(), prefix_attention(model, enabled=prefix), ctx:
            group = DecodeGroup(model, lengths)
            alone = 0.0
            for ids in prompts:
                cache = PrefixCache(model, chunk_tokens=32768)
                logits = cache.extend(ids, 0, want_logits=True)
                group.add(cache, logits)
                if ids is prompts[0]:
                    cache.greedy(logits, max_new_tokens=3, stop=never)  # warm
                    cache.crop(len(ids))
                    alone = _time(lambda: cache.greedy(logits, max_new_tokens=args.steps, stop=never))
                del cache
            grouped = _time(lambda: group.greedy(max_new_tokens=args.steps, stop=never))
            steps = args.steps - 1
            print(f"prefix attention {'on ' if prefix else 'off'}, SDPA backends {forced}: one row {1e3 * alone / steps:.1f} ms/step; "
                  f"{args.rows} rows {1e3 * grouped / steps:.1f} ms/step ({1e3 * grouped / steps / args.rows:.1f} ms a row)")
            del group
            torch.cuda.empty_cache()
    with torch.inference_mode(), prefix_attention(model), model_attention(model), decode_sdpa_context("cudnn", cuda):
        group = DecodeGroup(model, lengths)
        for ids in prompts:
            cache = PrefixCache(model, chunk_tokens=32768)
            group.add(cache, cache.extend(ids, 0, want_logits=True))
            del cache
        with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CUDA, torch.profiler.ProfilerActivity.CPU]) as prof:
            group.greedy(max_new_tokens=3, stop=never)
    print(prof.key_averages().table(sort_by="cuda_time_total", row_limit=18, max_name_column_width=60))


if __name__ == "__main__":
    main()
