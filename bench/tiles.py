"""GPU survey of the fixed-shape attention tiles (kanana_longctx.kernels.attention.attend_tiles): which tile size pays.

Usage: python bench/tiles.py --tokenizer DIR [--shape llama-8b] [--tiles 0,2048,4096] [--lengths 4000:32000:4000]
       [--json OUT.json]
       python bench/tiles.py --shape kanana-2.1b --skip forward,grid --kernel-tiles 1024,1152,1280 (kernels only)

Prints, for each tile size (0 = the exact split path with per-call cuDNN/FA2 choice):
(1) the tile kernels alone: TFLOP/s of the folded rectangle at several cached-prefix lengths and of the causal
    square, and the first-call cost of a never-seen shape (cuDNN's plan build), for the head layout of `--shape`,
    with the thread-block arithmetic of a guess beside each: blocks of 128 query rows per kv head, their waves over
    the GPU's SMs and the last wave's fill (the 2.1B layout's 28 query heads over 4 kv heads make 224 blocks of a
    1024-token tile on 132 SMs, 1.7 waves, where the 8B's make 256, 1.94; its rectangles ran ~510 TFLOP/s against
    617-683);
(2) our forward on the random 8B model: a cold and a warm full prefill, and a suffix over a cached prefix;
(3) a NIAH grid run through the runner (fast engine), split into prefill and decode seconds, with its TFLOP/s
    on the FLOPs it computed.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import torch

from kanana_longctx.bench.timing import cuda_seconds, first_call_seconds, write_rows
from kanana_longctx.fastpath import llama as fast_llama
from kanana_longctx.kernels import attention, choice


BLOCK_ROWS = 128  # query rows a thread block, in the guess of the waves column


def waves(blocks: int, sms: int) -> str:
    """'waves/fill': blocks over SMs, and the share of the last started wave's slots that hold work."""
    full = -(-blocks // sms)
    return f"{blocks / sms:.2f}/{blocks / (full * sms):.0%}"


def kernel_rows(tiles, shape_name: str, prefixes=(16384, 65536, 122880)):
    from kanana_longctx.bench.models import SHAPES

    rows = []
    shape = SHAPES[shape_name]
    hq, hkv, d = shape.heads, shape.kv_heads, shape.head_dim or shape.hidden // shape.heads
    sms = torch.cuda.get_device_properties(0).multi_processor_count
    for tile in [t for t in tiles if t]:
        q = torch.randn(1, hq, tile, d, device="cuda", dtype=torch.bfloat16)
        kq = torch.randn(1, hq, tile, d, device="cuda", dtype=torch.bfloat16)
        sq = lambda: attention.attention_with_lse(q, kq, kq, causal=True, scale=d**-0.5, kernel="cudnn", recurring=True)
        plan = first_call_seconds(sq)
        s = cuda_seconds(sq)
        rows.append({"what": "square", "shape": shape_name, "tile": tile, "waves": waves(hq * -(-tile // BLOCK_ROWS), sms),
                     "first_call_ms": round(plan * 1e3, 1), "ms": round(s * 1e3, 3),
                     "tflops": round(2 * 2 * hq * d * tile * tile / 2 / s / 1e12, 1)})
        for prefix in prefixes:
            k = torch.randn(1, hkv, prefix, d, device="cuda", dtype=torch.bfloat16)
            folded = q.reshape(1, hkv, hq // hkv * tile, d)
            rect = lambda: attention.attention_with_lse(folded, k, k, causal=False, scale=d**-0.5, kernel="cudnn", recurring=True)
            plan = first_call_seconds(rect)
            s = cuda_seconds(rect)
            blocks = hkv * -(-(hq // hkv * tile) // BLOCK_ROWS)
            rows.append({"what": "rect", "shape": shape_name, "tile": tile, "prefix": prefix, "waves": waves(blocks, sms),
                         "first_call_ms": round(plan * 1e3, 1),
                         "ms": round(s * 1e3, 3), "tflops": round(2 * 2 * hq * d * tile * prefix / s / 1e12, 1)})
        merge = lambda: attention.merge_states(q, q[..., 0].float(), q, q[..., 0].float())
        rows.append({"what": "merge", "tile": tile, "ms": round(cuda_seconds(merge) * 1e3, 3)})
        for row in rows[-len(prefixes) - 2 :]:
            print(row, flush=True)
    return rows


def forward_rows(loaded, tiles, lengths=(32768, 131072)):  # lengths within the shape's 128K YaRN window
    from kanana_longctx.plan.flops import ModelShape, prefill_flops, suffix_flops

    rows = []
    shape = ModelShape.from_config(loaded.model.config)
    for tile in tiles:
        fast = fast_llama.PrefixReusingLlama(loaded, max_tokens=max(lengths) + 64, tile_tokens=tile)  # fresh plans
        for n in lengths:
            ids = torch.randint(0, 32000, (n,), device="cuda")
            cold = first_call_seconds(lambda: fast.prefill(ids, 0))
            warm = cuda_seconds(lambda: fast.prefill(ids, 0), repeats=1)
            s0 = n // 2 + 777  # an odd prefix, like a needle position
            suffix = cuda_seconds(lambda: fast.prefill(ids[s0:], s0), repeats=1)
            row = {"what": "forward", "tile": tile, "tokens": n, "cold_s": round(cold, 3), "warm_s": round(warm, 3),
                   "warm_tflops": round(prefill_flops(shape, n) / warm / 1e12, 1), "suffix_s": round(suffix, 3),
                   "suffix_tflops": round(suffix_flops(shape, s0, n - s0) / suffix / 1e12, 1)}
            rows.append(row)
            print(row, flush=True)
        fast = None  # free the KV buffer before the next tile size
        torch.cuda.empty_cache()
    return rows


def grid_rows(loaded, tokenizer, tiles, lengths: str, depths: str | None, shape_name: str):
    from kanana_longctx.probes.build import ProbeRequest, build_probe_set
    from kanana_longctx.probes.grid import resolve_grid
    from kanana_longctx.options import RunOptions
    from kanana_longctx.run.runner import execute

    grid = resolve_grid(preset=None, lengths=lengths, depths=depths)
    probe_set = build_probe_set(ProbeRequest.from_grid(grid, haystack="builtin", form="retform", lang="en"), tokenizer)
    rows = []
    default_tile = choice.CUDNN_TILE_TOKENS
    try:
        for tile in tiles:
            choice.CUDNN_TILE_TOKENS = tile  # the tile the run chooses (each run plans its cuDNN shapes afresh)
            with tempfile.TemporaryDirectory() as tmp:
                summary = execute(probe_set, RunOptions(model=f"random:{shape_name}"), Path(tmp) / "g", loaded=loaded, tokenizer=tokenizer)
            row = {"what": "grid", "tile": tile, "probes": summary.ran, "wall_s": round(summary.wall_seconds, 2),
                   "prefill_s": round(summary.prefill_seconds, 2), "decode_s": round(summary.decode_seconds, 2),
                   "computed_flops": f"{summary.computed_flops:.3e}", "no_reuse_flops": f"{summary.effective_flops:.3e}",
                   "tflops_on_computed": round(summary.computed_flops / summary.prefill_seconds / 1e12, 1),
                   "peak_gib": round(summary.peak_memory_gib, 1)}
            rows.append(row)
            print(row, flush=True)
    finally:
        choice.CUDNN_TILE_TOKENS = default_tile
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokenizer", help="a tokenizer directory (the grid part needs it)")
    parser.add_argument("--shape", default="llama-8b", help="a named shape of kanana-longctx bench")
    parser.add_argument("--tiles", default="0,1024,2048")
    parser.add_argument("--kernel-tiles", default="1024,2048,4096,8192")
    parser.add_argument("--prefixes", default="16384,65536,122880", help="cached keys of the rectangles")
    parser.add_argument("--lengths", default="4000:32000:4000")
    parser.add_argument("--depths", default=None)
    parser.add_argument("--skip", default="", help="comma list of parts to skip: kernels,forward,grid")
    parser.add_argument("--json", default="")
    args = parser.parse_args()
    from kanana_longctx.bench.models import random_model
    from kanana_longctx.hub import resolve_model
    from kanana_longctx.backends.local import finish_loaded
    from kanana_longctx.tokenizer import load_tokenizer

    tiles = [int(x) for x in args.tiles.split(",")]
    skip = set(args.skip.split(","))
    rows: list[dict] = [{"gpu": torch.cuda.get_device_name(), "torch": torch.__version__}]
    print(rows[0], flush=True)
    if "kernels" not in skip:
        prefixes = [int(x) for x in args.prefixes.split(",")]
        rows += kernel_rows([int(x) for x in args.kernel_tiles.split(",")], args.shape, prefixes)
    if {"forward", "grid"} <= skip:
        write_rows(rows, args.json)
        return
    if "grid" not in skip and not args.tokenizer:
        parser.error("the grid part needs --tokenizer (or --skip grid)")
    model = random_model(args.shape, device="cuda", yarn=True)
    loaded = finish_loaded(model, "cuda", "bfloat16", "cudnn", {"factor": 4.4, "original_max_position_embeddings": 32768})
    if "forward" not in skip:
        rows += forward_rows(loaded, tiles)
    if "grid" not in skip:
        rows += grid_rows(loaded, load_tokenizer(resolve_model(args.tokenizer)), tiles, args.lengths, args.depths, args.shape)
    write_rows(rows, args.json)
    print("\n".join(json.dumps(r) for r in rows[1:]))


if __name__ == "__main__":
    main()
