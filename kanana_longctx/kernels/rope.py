"""Rotary position embedding applied in place to the q and k heads of a fused QKV projection (one Triton pass).

Usage: rope_in_place(qkv, cos, sin, rotated_heads=heads + kv_heads, head_dim=head_dim)
       # qkv (1, T, (heads + 2 kv_heads) x head_dim), cos/sin (1, 1, T, head_dim); where
       # kernels.choice.layer_halves says "kernels" (CUDA with Triton, an even power-of-two head_dim)

Why: in a long prefill of a small model RoPE is a visible share of the GPU's time. Compiled by inductor (dynamic
in the token count) the q and k RoPE kernels ran at about 0.5 TB/s on the H200, 3.6 s of the 2.1B shape's 32K grid
(docs/performance.md, "2026-12-04, later"), where the pass reads and writes each q/k element once. This kernel
loads one block of tokens' cos/sin once for several heads, rotates both halves of each head in registers and
writes the result back where it was read, so q and k stay views of the projection's output.

The arithmetic is transformers' rotate-half RoPE (q * cos + rotate_half(q) * sin) in float32, rounded once to the
input dtype, as the compiled code rounds it (fastpath.layers.pre_attention is the reference).
"""

from __future__ import annotations

from kanana_longctx.kernels.choice import triton_kernels

_BLOCK_T = 16  # tokens a program rotates
_HEAD_BLOCK = 4  # heads a program rotates with the same cos/sin


@triton_kernels
def _kernel(triton, tl):

    @triton.jit(do_not_specialize=["T", "stride_x", "stride_c", "heads"])
    def rope(x, cos, sin, T, stride_x, stride_c, heads, HALF: tl.constexpr, BLOCK_T: tl.constexpr,
             HEAD_BLOCK: tl.constexpr):
        t = (tl.program_id(0) * BLOCK_T + tl.arange(0, BLOCK_T)).to(tl.int64)
        d = tl.arange(0, HALF)
        live = (t < T)[:, None]
        c_offs = t[:, None] * stride_c + d[None, :]
        c1 = tl.load(cos + c_offs, mask=live, other=0.0).to(tl.float32)
        c2 = tl.load(cos + c_offs + HALF, mask=live, other=0.0).to(tl.float32)
        s1 = tl.load(sin + c_offs, mask=live, other=0.0).to(tl.float32)
        s2 = tl.load(sin + c_offs + HALF, mask=live, other=0.0).to(tl.float32)
        h0 = tl.program_id(1) * HEAD_BLOCK
        for i in tl.static_range(HEAD_BLOCK):
            h = h0 + i
            keep = live & (h + d[None, :] * 0 < heads)  # (the last program's heads may run out)
            offs = t[:, None] * stride_x + h * (2 * HALF) + d[None, :]
            a = tl.load(x + offs, mask=keep, other=0.0)
            b = tl.load(x + offs + HALF, mask=keep, other=0.0)
            af, bf = a.to(tl.float32), b.to(tl.float32)
            tl.store(x + offs, (af * c1 - bf * s1).to(a.dtype), mask=keep)
            tl.store(x + offs + HALF, (bf * c2 + af * s2).to(a.dtype), mask=keep)

    return rope


def rope_in_place(qkv, cos, sin, *, rotated_heads: int, head_dim: int) -> None:
    """Rotate the first `rotated_heads` heads of every token of qkv (1, T, width) in place. cos, sin: the rotary
    tables of those T tokens, (1, 1, T, head_dim) or (1, T, head_dim)."""
    if qkv.dim() != 3 or qkv.shape[0] != 1 or qkv.stride(-1) != 1:
        raise ValueError(f"RoPE in place takes a (1, T, width) projection with unit feature stride, not {qkv.shape}")
    T = qkv.shape[1]
    cos = cos.reshape(T, head_dim)
    sin = sin.reshape(T, head_dim)
    if cos.stride(-1) != 1 or sin.stride() != cos.stride():
        cos, sin = cos.contiguous(), sin.contiguous()
    grid = (-(-T // _BLOCK_T), -(-rotated_heads // _HEAD_BLOCK))
    _kernel()[grid](
        qkv, cos, sin, T, qkv.stride(1), cos.stride(0), rotated_heads, HALF=head_dim // 2, BLOCK_T=_BLOCK_T,
        HEAD_BLOCK=_HEAD_BLOCK,
    )
