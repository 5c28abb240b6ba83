"""A fused merge of two partial attention results (one pass, Triton), for the split and tiled attention on CUDA.

Usage: out = fused_merge(o1, lse1, o2, lse2) if fused_merge_available(o1, o2) else ...  # attention.merge_states

Why: `attention.merge_states` in plain torch is ~7 elementwise kernels over float32 copies of both outputs, a
share of a long prefill worth saving (docs/performance.md: the fused merge). This kernel reads each input once
and writes the bf16 result once. Triton ships with CUDA builds of
torch; without it (or off CUDA) the torch version runs.
"""

from __future__ import annotations

import functools

from kanana_longctx.kernels.choice import triton_modules


@functools.cache
def _kernel():
    modules = triton_modules()
    if modules is None:
        return None
    triton, tl = modules

    @triton.jit
    def merge(o1, l1, o2, l2, out, n_rows, D: tl.constexpr, BLOCK: tl.constexpr):
        rows = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
        live = rows < n_rows
        a = tl.load(l1 + rows, mask=live, other=0.0)
        b = tl.load(l2 + rows, mask=live, other=0.0)
        m = tl.maximum(a, b)
        wa = tl.exp(a - m)
        wb = tl.exp(b - m)
        total = wa + wb
        offs = rows[:, None] * D + tl.arange(0, D)[None, :]
        x = tl.load(o1 + offs, mask=live[:, None], other=0.0).to(tl.float32)
        y = tl.load(o2 + offs, mask=live[:, None], other=0.0).to(tl.float32)
        merged = (x * wa[:, None] + y * wb[:, None]) / total[:, None]
        tl.store(out + offs, merged.to(out.dtype.element_ty), mask=live[:, None])

    return merge


def fused_merge_available(o1, o2) -> bool:
    d = o1.shape[-1]
    return (
        o1.is_cuda
        and o1.shape == o2.shape
        and o1.dtype == o2.dtype
        and d & (d - 1) == 0
        and o1.is_contiguous()
        and o2.is_contiguous()
        and _kernel() is not None
    )


def fused_merge(o1, lse1, o2, lse2):
    """Same result as attention.merge_states (float32 arithmetic, output in o1's dtype), in one kernel."""
    kernel = _kernel()
    d = o1.shape[-1]
    n_rows = o1.numel() // d
    out = o1.new_empty(o1.shape)
    block = 32
    kernel[(-(-n_rows // block),)](
        o1, lse1.contiguous(), o2, lse2.contiguous(), out, n_rows, D=d, BLOCK=block
    )
    return out
