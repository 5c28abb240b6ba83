"""GPU survey of the prefill layer variants (kanana_longctx.fastpath.layers): transformers' modules, fused weights
run eagerly, fused weights with the kernel halves (the default on CUDA) or the compiled ones, the default without
the trimmed last layer.

Usage: python bench/layers.py [--shape llama-8b] [--variants "modules,fused kernels,fused compiled"] [--json OUT.json]

Prints, per variant: the first call (compilation included), warm seconds and TFLOP/s of a full 32K prefill and of
suffixes over a cached prefix (the shapes a NIAH grid is made of), six 256-token suffixes over 8000 cached tokens
in six KV rows, one forward each vs joined in one (`prefill_rows`), and where the GPU time of one warm 32K prefill
goes (torch.profiler, kernels grouped as matmul / attention / merge / other), with the GPU's idle share. TFLOP/s
are on the full FLOPs of each case (`suffix_flops`), whatever the trimmed last layer leaves out.
"""

from __future__ import annotations

import argparse
import os

import torch

from kanana_longctx.bench.timing import cuda_seconds, emit_row, first_call_seconds, profile_split, write_rows

CASES = ((0, 32768), (28672, 4096), (15360, 1024), (8000, 256))  # (cached prefix, suffix tokens)
JOINED = (6, 8000, 256)  # rows, cached prefix, suffix tokens per row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shape", default="llama-8b")
    ap.add_argument("--variants", default="modules,fused eager,fused kernels,fused compiled,untrimmed",
                    help="comma list of variants")
    ap.add_argument("--json", default=None)
    args = ap.parse_args()

    from kanana_longctx.bench.models import random_model
    from kanana_longctx.backends.local import finish_loaded
    from kanana_longctx.fastpath.llama import PrefixReusingLlama
    from kanana_longctx.kernels.choice import LAYER_KERNELS_ENV
    from kanana_longctx.plan.flops import ModelShape, suffix_flops

    model = random_model(args.shape, device="cuda", dtype="bfloat16", yarn=True)
    loaded = finish_loaded(model, "cuda", "bfloat16", "cudnn", {"factor": 4.4, "original_max_position_embeddings": 32768})
    shape = ModelShape.from_config(model.config)
    ids = torch.randint(0, model.config.vocab_size, (32768,), device="cuda", generator=torch.Generator("cuda").manual_seed(0))
    variants = {  # engine arguments, and whether the kernel halves may run (kernels.choice.layer_halves)
        "modules": (dict(fuse_layers=False), "1"),
        "fused eager": (dict(compile_layers=False), "1"),
        "fused kernels": ({}, "1"),
        "fused compiled": ({}, "0"),
        "untrimmed": (dict(trim_last_layer=False), "1"),
    }
    rows = []
    for name in args.variants.split(","):
        name = name.strip()
        kwargs, kernels = variants[name]
        os.environ[LAYER_KERNELS_ENV] = kernels  # read when the engine builds its layer halves
        fast = PrefixReusingLlama(loaded, max_tokens=32768 + 64, rows=JOINED[0], **kwargs)  # its own cuDNN plans
        row = {"variant": name, "first_32k_prefill_s": round(first_call_seconds(lambda: fast.prefill(ids, 0)), 2)}
        for prefix, suffix in CASES:
            s = cuda_seconds(lambda: fast.prefill(ids[prefix : prefix + suffix], prefix))
            flops = suffix_flops(shape, prefix, suffix)
            row[f"{suffix}@{prefix}"] = {"s": round(s, 4), "tflops": round(flops / s / 1e12, 1)}
        n_rows, prefix, suffix = JOINED
        for r in range(1, n_rows):
            fast.kv.copy_prefix(0, r, 0, prefix)
        parts = [(ids[prefix + 300 * r : prefix + 300 * r + suffix], prefix, r) for r in range(n_rows)]
        flops = n_rows * suffix_flops(shape, prefix, suffix)
        for how, fn in (
            ("separate", lambda: [fast.prefill(p, at, row=r) for p, at, r in parts]),
            ("joined", lambda: fast.prefill_rows(parts)),
        ):
            s = cuda_seconds(fn)
            row[f"{n_rows}x{suffix}@{prefix} {how}"] = {"s": round(s, 4), "tflops": round(flops / s / 1e12, 1)}
        row["profile_32k"] = profile_split(lambda: fast.prefill(ids, 0))
        emit_row(rows, row)
        fast = None
        torch.cuda.empty_cache()
    write_rows(rows, args.json)


if __name__ == "__main__":
    main()
