"""Where a reuse-engine decoding step's time goes, on one GPU: milliseconds per greedy step of one row alone
(PrefixCache.greedy) against a DecodeGroup of N rows, under transformers' SDPA or the reuse run's packed decoding
attention (kernels.hf_prefix), the group's cache concatenated or written in place, and a profile of one grouped
step (top CUDA kernels).

Usage: python bench/reuse_decode.py [--shape kanana-moe-a3b] [--rows 6] [--tokens 32768] [--steps 17]
Prints a table; numbers only, no thresholds. Needs CUDA (random bf16 weights, kanana_longctx.bench.models).
"""

from __future__ import annotations

import argparse

import torch

from kanana_longctx.backends.hfcache import DecodeGroup, PrefixCache
from kanana_longctx.bench.models import random_model
from kanana_longctx.bench.timing import first_call_seconds as _time
from kanana_longctx.kernels.choice import decode_sdpa_context
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

    def prepared(room: int) -> DecodeGroup:
        group = DecodeGroup(model, lengths, max_new_tokens=room)
        for ids in prompts:
            cache = PrefixCache(model, chunk_tokens=32768)
            group.add(cache, cache.extend(ids, 0, want_logits=True))
            del cache
        return group

    variants = (  # (label, the reuse run's decoding attention, room in the group's cache)
        ("transformers' SDPA (repeats K/V heads), cache by concatenation", False, 0),
        ("packed decoding attention, cache by concatenation", True, 0),
        ("packed decoding attention, cache in place (the reuse run)", True, args.steps),
    )
    for label, packed, room in variants:
        with torch.inference_mode(), prefix_attention(model, enabled=packed), model_attention(model), \
                decode_sdpa_context("cudnn", cuda):
            cache = PrefixCache(model, chunk_tokens=32768)
            logits = cache.extend(prompts[0], 0, want_logits=True)
            cache.greedy(logits, max_new_tokens=3, stop=never)  # warm
            cache.crop(len(prompts[0]))
            alone = _time(lambda: cache.greedy(logits, max_new_tokens=args.steps, stop=never))
            del cache
            group = prepared(room)
            grouped = _time(lambda: group.greedy(max_new_tokens=args.steps, stop=never))
            steps = args.steps - 1
            print(f"{label}: one row {1e3 * alone / steps:.1f} ms/step; {args.rows} rows {1e3 * grouped / steps:.1f} "
                  f"ms/step ({1e3 * grouped / steps / args.rows:.1f} ms a row)")
            del group
            torch.cuda.empty_cache()
    with torch.inference_mode(), prefix_attention(model), model_attention(model), decode_sdpa_context("cudnn", cuda):
        group = prepared(3)
        with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CUDA, torch.profiler.ProfilerActivity.CPU]) as prof:
            group.greedy(max_new_tokens=3, stop=never)
    print(prof.key_averages().table(sort_by="cuda_time_total", row_limit=18, max_name_column_width=60))


if __name__ == "__main__":
    main()
