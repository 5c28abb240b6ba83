"""The memory-bound passes of a prefill layer on Triton kernels of our own: RMSNorm and SiLU(gate) * up.

Usage: h = rms_norm(x2d, weight, eps); a = silu_mul(gate_up2d, ffn)   # where kernels.choice.layer_halves
       # says "kernels" (CUDA with Triton)

Why: with these, RoPE (kernels.rope) and the residual adds folded into the matmuls (torch.addmm), a layer half
on CUDA needs no torch.compile (fastpath.layers, FusedLayers' "kernels" mode). Compiling the halves took 4-6 s of
the host on a fresh machine, on a worker thread whose share of the GIL slowed the eager haystack stream beside it
to seconds for a fraction of a second of GPU work, and inductor's kernels for these passes, dynamic in the token
count, ran at a third of the H200's memory speed (docs/performance.md, "2026-12-04, third session").

The arithmetic is transformers' (LlamaRMSNorm: normalise in float32, round to the input dtype, then scale by the
weight; SiLU-gated MLP), with the elementwise chains rounded once from float32 as compiled code rounds them.
"""

from __future__ import annotations

from kanana_longctx.kernels.choice import triton_kernels

_SILU_BLOCK = 1024  # features of one program of silu_mul


@triton_kernels
def _kernels(triton, tl):

    @triton.jit(do_not_specialize=["n"])
    def rms_norm_rows(x, w, out, n, eps, BLOCK: tl.constexpr):
        row = tl.program_id(0).to(tl.int64)
        cols = tl.arange(0, BLOCK)
        live = cols < n
        v = tl.load(x + row * n + cols, mask=live, other=0.0)
        h = v.to(tl.float32)
        rstd = 1.0 / tl.sqrt(tl.sum(h * h, axis=0) / n + eps)
        scale = tl.load(w + cols, mask=live, other=0.0)
        normed = (h * rstd).to(v.dtype).to(tl.float32) * scale.to(tl.float32)
        tl.store(out + row * n + cols, normed.to(v.dtype), mask=live)

    @triton.jit(do_not_specialize=["ffn"])
    def silu_mul_rows(gu, out, ffn, BLOCK: tl.constexpr):
        row = tl.program_id(0).to(tl.int64)
        cols = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
        live = cols < ffn
        g = tl.load(gu + row * 2 * ffn + cols, mask=live, other=0.0)
        u = tl.load(gu + row * 2 * ffn + ffn + cols, mask=live, other=0.0).to(tl.float32)
        gf = g.to(tl.float32)
        tl.store(out + row * ffn + cols, (gf / (1.0 + tl.exp(-gf)) * u).to(g.dtype), mask=live)

    return rms_norm_rows, silu_mul_rows


def rms_norm(x, weight, eps: float):
    """RMSNorm of the rows of x (rows, n), contiguous, scaled by weight (n,): a new (rows, n) tensor."""
    rows, n = x.shape
    if not x.is_contiguous() or weight.shape != (n,):
        raise ValueError(f"rms_norm takes contiguous (rows, {n}) rows and a ({n},) weight")
    out = x.new_empty(rows, n)
    if rows:
        block = 1 << (n - 1).bit_length()  # the row in one block
        _kernels()[0][(rows,)](x, weight, out, n, eps, BLOCK=block, num_warps=8 if block >= 4096 else 4)
    return out


def silu_mul(gate_up, ffn: int):
    """SiLU(gate) * up of the rows of gate_up (rows, 2 x ffn), contiguous, gate first: a new (rows, ffn) tensor."""
    rows, width = gate_up.shape
    if width != 2 * ffn or not gate_up.is_contiguous():
        raise ValueError(f"silu_mul takes contiguous (rows, {2 * ffn}) gate-up rows")
    out = gate_up.new_empty(rows, ffn)
    if rows:
        _kernels()[1][(rows, -(-ffn // _SILU_BLOCK))](gate_up, out, ffn, BLOCK=_SILU_BLOCK, num_warps=4)
    return out
