"""A fused merge of two partial attention results (one pass, Triton), for the split and tiled attention on CUDA.

Usage: out = fused_merge(o1, lse1, o2, lse2) if fused_merge_available(o1, o2) else ...  # attention.merge_states
       merge_tiles_into(out, o_rect, lse_rect, o_sq, lse_sq, j0=j, first=first, q_start=q_start)  # attend_tiles

Why: `attention.merge_states` in plain torch is ~7 elementwise kernels over float32 copies of both outputs, a
share of a long prefill worth saving (docs/performance.md: the fused merge). This kernel reads each input once
and writes the bf16 result once. Triton ships with CUDA builds of
torch; without it (or off CUDA) the torch version runs.

`merge_tiles_into` merges several tiles of `attention.attend_tiles` in one launch and writes their real rows
straight into the call's output, where a merge and a copy per tile were two launches a tile: on the H200 a merge
call cost 0.11-0.18 ms of wall time for 5 us of memory traffic (`bench/tiles.py`), and a 32K grid of the 2.1B
shape makes about 100,000 tiles.
"""

from __future__ import annotations

from kanana_longctx.kernels.choice import triton_kernels


@triton_kernels
def _kernels(triton, tl):
    """(merge, merge_tiles), compiled on first use; None without Triton."""

    # Integer arguments are not specialised: Triton compiles a variant of a kernel for every combination of its
    # integer arguments being 1 or a multiple of 16, and the tiles' positions and counts bring new combinations
    # all through a grid (tens of compilations of ~0.4 s each on a fresh machine, with the GPU waiting).
    @triton.jit(do_not_specialize=["n_rows"])
    def merge(o1, l1, o2, l2, out, n_rows, D: tl.constexpr, BLOCK: tl.constexpr):
        rows = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
        live = rows < n_rows
        a = tl.load(l1 + rows, mask=live, other=0.0)
        b = tl.load(l2 + rows, mask=live, other=0.0)
        m = tl.maximum(a, b)
        wa = tl.exp(a - m)
        wb = tl.exp(b - m)
        offs = rows[:, None] * D + tl.arange(0, D)[None, :]
        x = tl.load(o1 + offs, mask=live[:, None], other=0.0).to(tl.float32)
        y = tl.load(o2 + offs, mask=live[:, None], other=0.0).to(tl.float32)
        merged = (x * wa[:, None] + y * wb[:, None]) / (wa + wb)[:, None]
        tl.store(out + offs, merged.to(out.dtype.element_ty), mask=live[:, None])

    @triton.jit(do_not_specialize=["n_rows", "heads", "tile", "m", "n", "j0", "first", "q_start", "T"])
    def merge_tiles(
        o1, l1, o2, l2, out, n_rows, heads, tile, m, n, j0, first, q_start, T,
        D: tl.constexpr, BLOCK: tl.constexpr,
    ):
        # rows of (B, m, heads, tile): tile j0 + j of the call's n padded tiles, head h, row t
        rows = (tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)).to(tl.int64)
        t = rows % tile
        h = (rows // tile) % heads
        j = (rows // (tile * heads)) % m
        b = rows // (tile * heads * m)
        pos = first + (j0 + j) * tile + t  # the row's position in the sequence
        live = (rows < n_rows) & (pos >= q_start) & (pos < q_start + T)
        sq = ((b * n + j0 + j) * heads + h) * tile + t  # the same row in the batched squares (B, n, heads, tile)
        a = tl.load(l1 + rows, mask=live, other=0.0)
        c = tl.load(l2 + sq, mask=live, other=0.0)
        mx = tl.maximum(a, c)
        wa = tl.exp(a - mx)
        wc = tl.exp(c - mx)
        cols = tl.arange(0, D)[None, :]
        x = tl.load(o1 + rows[:, None] * D + cols, mask=live[:, None], other=0.0).to(tl.float32)
        y = tl.load(o2 + sq[:, None] * D + cols, mask=live[:, None], other=0.0).to(tl.float32)
        merged = (x * wa[:, None] + y * wc[:, None]) / (wa + wc)[:, None]
        dst = ((b * T + pos - q_start) * heads + h) * D  # out is (B, T, heads, D)
        tl.store(out + dst[:, None] + cols, merged.to(out.dtype.element_ty), mask=live[:, None])

    return merge, merge_tiles


def tiles_merge_available(out, o_sq) -> bool:
    """Whether `merge_tiles_into` runs here: CUDA with Triton, contiguous output and squares, a power-of-two
    head_dim."""
    d = out.shape[-1]
    return (
        out.is_cuda and out.is_contiguous() and o_sq.is_contiguous() and d & (d - 1) == 0
        and _kernels() is not None
    )


def merge_tiles_into(out, o_rect, lse_rect, o_sq, lse_sq, *, j0: int, first: int, q_start: int) -> None:
    """Merge tiles j0 .. j0+m-1 of an `attend_tiles` call and write their real rows into `out`, in one kernel.

    o_rect (B, m, H, tile, D) and lse_rect (B, m, H, tile) float32: the m tiles' rectangles over the keys before
    them, stacked; o_sq (B, n, H, tile, D) and lse_sq (B, n, H, tile): the call's n batched causal squares, tile 0
    starting at position `first`; out (B, T, H, D) holds positions [q_start, q_start + T). Rows of padded tiles
    outside those positions are not written. Same arithmetic as `fused_merge` (float32, out's dtype)."""
    B, m, H, tile, D = o_rect.shape
    n_rows = B * m * H * tile
    block = 32
    _kernels()[1][(-(-n_rows // block),)](
        o_rect.contiguous(), lse_rect.contiguous(), o_sq, lse_sq.contiguous(), out, n_rows, H, tile, m,
        o_sq.shape[1], j0, first, q_start, out.shape[1], D=D, BLOCK=block,
    )


def fused_merge_available(o1, o2) -> bool:
    d = o1.shape[-1]
    return (
        o1.is_cuda
        and o1.shape == o2.shape
        and o1.dtype == o2.dtype
        and d & (d - 1) == 0
        and o1.is_contiguous()
        and o2.is_contiguous()
        and _kernels() is not None
    )


def fused_merge(o1, lse1, o2, lse2):
    """Same result as attention.merge_states (float32 arithmetic, output in o1's dtype), in one kernel."""
    kernel = _kernels()[0]
    d = o1.shape[-1]
    n_rows = o1.numel() // d
    out = o1.new_empty(o1.shape)
    block = 32
    kernel[(-(-n_rows // block),)](
        o1, lse1.contiguous(), o2, lse2.contiguous(), out, n_rows, D=d, BLOCK=block
    )
    return out


def warm_up(device, dtype, head_dim: int) -> None:
    """Compile both merge kernels for `dtype` and `head_dim` by a first call on tiny tensors, off the path that
    waits for them (the engine runs this on the worker that compiles its layer halves). Their integer arguments
    are not specialised, so this is the variant every later call runs. Nothing where they would not run."""
    import torch

    if device.type != "cuda" or head_dim & (head_dim - 1) or _kernels() is None:
        return
    o = torch.zeros(1, 2, 2, 16, head_dim, device=device, dtype=dtype)
    lse = torch.zeros(1, 2, 2, 16, device=device, dtype=torch.float32)
    out = torch.empty(1, 32, 2, head_dim, device=device, dtype=dtype)
    merge_tiles_into(out, o[:, 1:], lse[:, 1:], o, lse, j0=1, first=0, q_start=0)
    fused_merge(o, lse, o, lse)
