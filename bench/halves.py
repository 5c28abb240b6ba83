"""GPU time of one prefill layer's two halves outside the attention (kanana_longctx.fastpath.layers): the compiled
halves (torch.compile, dynamic in the token count) against the kernel halves (kernels.pointwise, kernels.rope, the
residual adds in the matmuls), on random weights of a shape's dimensions.

Usage: python bench/halves.py [--shapes kanana-2.1b,llama-8b] [--tokens 3000,16384] [--json OUT.json]

Prints, per shape, variant and token count: the GPU microseconds of the two halves (torch.profiler over 20 calls,
after a warm-up call that compiles) and the kernels that took most of them, and the largest difference between the
variants' outputs. The numbers behind docs/performance.md, "2026-12-04, third session".
"""

from __future__ import annotations

import argparse

import torch

from kanana_longctx.bench.timing import write_rows

CALLS = 20


def _inputs(dims, tokens: int, gen):
    bf = dict(device="cuda", dtype=torch.bfloat16)
    heads, kv, d, hidden = dims.heads, dims.kv_heads, dims.head_dim, dims.hidden
    x = torch.randn(1, tokens, hidden, generator=gen, **bf)
    angles = torch.arange(5000, 5000 + tokens, device="cuda")[:, None] / 10000 ** (torch.arange(0, d, 2, device="cuda") / d)
    emb = torch.cat([angles, angles], -1)
    cos, sin = emb.cos().bfloat16()[None, None], emb.sin().bfloat16()[None, None]
    o = torch.randn(1, tokens, heads * d, generator=gen, **bf)
    return x, cos, sin, o


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shapes", default="kanana-2.1b,llama-8b")
    ap.add_argument("--tokens", default="3000,16384")
    ap.add_argument("--json", default=None)
    args = ap.parse_args()

    from kanana_longctx.bench.models import shape_config
    from kanana_longctx.fastpath import layers as L
    from kanana_longctx.plan.dims import ModelDims

    rows = []
    for shape in args.shapes.split(","):
        dims = ModelDims.from_config(shape_config(shape.strip(), yarn=False))
        gen = torch.Generator(device="cuda").manual_seed(0)
        bf = dict(device="cuda", dtype=torch.bfloat16)
        heads, kv, d, hidden, ffn = dims.heads, dims.kv_heads, dims.head_dim, dims.hidden, dims.ffn
        w_qkv = torch.randn((heads + 2 * kv) * d, hidden, generator=gen, **bf) * 0.02
        w_o = torch.randn(hidden, heads * d, generator=gen, **bf) * 0.02
        w_gu = torch.randn(2 * ffn, hidden, generator=gen, **bf) * 0.02
        w_down = torch.randn(hidden, ffn, generator=gen, **bf) * 0.02
        norm = torch.ones(hidden, **bf)
        variants = {
            "compiled": (torch.compile(L.pre_attention, dynamic=True), torch.compile(L.post_attention, dynamic=True)),
            "kernels": (L.kernel_pre_attention, L.kernel_post_attention),
        }
        for tokens in (int(t) for t in args.tokens.split(",")):
            x, cos, sin, o = _inputs(dims, tokens, gen)
            pre_args = (x, norm, 1e-5, w_qkv, None, None, None, cos, sin, heads, kv, d)
            post_args = (x, o, w_o, None, norm, 1e-5, w_gu, None, w_down, None, ffn)
            outputs = {}
            for name, (pre, post) in variants.items():
                outputs[name] = (*pre(*pre_args), post(*post_args))  # compiles
                torch.cuda.synchronize()
                with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CUDA]) as prof:
                    for _ in range(CALLS):
                        pre(*pre_args)
                        post(*post_args)
                    torch.cuda.synchronize()
                events = sorted(prof.key_averages(), key=lambda e: -e.device_time_total)
                total = sum(e.device_time_total for e in events) / CALLS
                top = [(e.key[:70], round(e.device_time_total / CALLS, 1)) for e in events[:7]]
                print(f"{shape} {name} {tokens} tokens: {total:9.1f} us a layer")
                for key, us in top:
                    print(f"    {us:9.1f} us  {key}")
                rows.append({"shape": shape, "variant": name, "tokens": tokens, "us": round(total, 1), "top": top})
            diff = max(float((a.float() - b.float()).abs().max()) for a, b in zip(*outputs.values()))
            print(f"{shape} {tokens} tokens: largest difference between the variants {diff:.3g} (bf16 rounding)")
    write_rows(rows, args.json)


if __name__ == "__main__":
    main()
