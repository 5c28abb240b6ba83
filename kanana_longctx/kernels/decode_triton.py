"""Split-KV decode attention in two Triton kernels: every (row, kv head, split) attends its share of the row's live
keys with the grouped query heads as one tile, and a second kernel merges the splits by their log-sum-exp.

Usage: if triton_decode_available(q): out = triton_split_attention(q, k_cache, v_cache, live, span, splits=16,
                                                                   scale=module.scaling)

Shapes: q (rows, kv_heads, groups, D) contiguous; k_cache, v_cache (rows, kv_heads, N, D) contiguous (one layer of
the fast engine's KV buffer); live (rows,) the keys each row attends, positions [0, live); span a device scalar,
the keys of one split (kernels.split_kv.SplitLayout owns it and re-cuts it per batch). Returns q's shape.

Why a kernel of our own: the decode step reads every live key once and does little arithmetic on it, so its speed
is the memory bandwidth it reaches. PyTorch's memory-efficient kernel in its variable-length mode (the previous
path, kernels.split_kv) runs a 64-query tile for the 4 to 7 query heads of a kv head and reached about a third of
the H200's bandwidth on the attention of a step (docs/performance.md), and every split is a separate sequence of
index tensors. Here a program loads its query heads once, streams its keys in blocks, keeps the softmax state in
registers and writes one float32 partial result; the bounds come from device memory (`live`, `span`), so one CUDA
graph serves every batch. The merge is one more kernel instead of a dozen elementwise ones. Float32 inputs are
multiplied in full precision (no TF32), so the float32 checks against transformers hold.
"""

from __future__ import annotations

from kanana_longctx.kernels.choice import triton_kernels

BLOCK_KEYS = 64  # keys a program loads per iteration


@triton_kernels
def _kernels(triton, tl):

    @triton.jit
    def split_attention(Q, K, V, LIVE, SPAN, O, L, scale, kv_heads, capacity,
                        G: tl.constexpr, G_PAD: tl.constexpr, D: tl.constexpr, BLOCK_N: tl.constexpr,
                        SPLITS: tl.constexpr, IEEE: tl.constexpr):
        split = tl.program_id(0)
        rh = tl.program_id(1)  # row * kv_heads + kv head
        row = rh // kv_heads
        span = tl.load(SPAN).to(tl.int32)
        lo = split * span
        hi = tl.minimum(lo + span, tl.load(LIVE + row).to(tl.int32))
        g = tl.arange(0, G_PAD)
        d = tl.arange(0, D)
        n = tl.arange(0, BLOCK_N)
        q = tl.load(Q + rh * G * D + g[:, None] * D + d[None, :], mask=g[:, None] < G, other=0.0)
        m = tl.full([G_PAD], float("-inf"), tl.float32)
        total = tl.zeros([G_PAD], tl.float32)
        acc = tl.zeros([G_PAD, D], tl.float32)
        base = rh.to(tl.int64) * capacity * D
        for start in range(lo, hi, BLOCK_N):
            keys = start + n
            valid = keys < hi
            offsets = base + keys[:, None].to(tl.int64) * D + d[None, :]
            k = tl.load(K + offsets, mask=valid[:, None], other=0.0)
            if IEEE:
                scores = tl.dot(q, tl.trans(k), input_precision="ieee")
            else:
                scores = tl.dot(q, tl.trans(k))
            scores = tl.where(valid[None, :], scores * scale, float("-inf"))
            m_new = tl.maximum(m, tl.max(scores, 1))
            alpha = tl.exp(m - m_new)
            p = tl.exp(scores - m_new[:, None])
            total = total * alpha + tl.sum(p, 1)
            v = tl.load(V + offsets, mask=valid[:, None], other=0.0)
            if IEEE:
                acc = acc * alpha[:, None] + tl.dot(p.to(v.dtype), v, input_precision="ieee")
            else:
                acc = acc * alpha[:, None] + tl.dot(p.to(v.dtype), v)
            m = m_new
        seen = total > 0  # a split past the row's live keys has none and weighs nothing in the merge
        out = acc / tl.where(seen, total, 1.0)[:, None]
        lse = tl.where(seen, m + tl.log(tl.where(seen, total, 1.0)), float("-inf"))
        at = (rh * SPLITS + split) * G_PAD
        tl.store(O + (at + g[:, None]) * D + d[None, :], out)
        tl.store(L + at + g, lse)

    @triton.jit
    def merge_splits(O, L, OUT, G: tl.constexpr, G_PAD: tl.constexpr, D: tl.constexpr, SPLITS: tl.constexpr):
        rh = tl.program_id(0)
        g = tl.arange(0, G_PAD)
        d = tl.arange(0, D)
        top = tl.full([G_PAD], float("-inf"), tl.float32)
        for split in range(SPLITS):
            top = tl.maximum(top, tl.load(L + (rh * SPLITS + split) * G_PAD + g))
        acc = tl.zeros([G_PAD, D], tl.float32)
        weights = tl.zeros([G_PAD], tl.float32)
        for split in range(SPLITS):
            at = (rh * SPLITS + split) * G_PAD
            w = tl.exp(tl.load(L + at + g) - top)  # 0 for a split without keys; split 0 always has one
            acc += w[:, None] * tl.load(O + (at + g[:, None]) * D + d[None, :])
            weights += w
        out = acc / weights[:, None]
        tl.store(OUT + rh * G * D + g[:, None] * D + d[None, :], out.to(OUT.dtype.element_ty), mask=g[:, None] < G)

    return split_attention, merge_splits


def triton_decode_available(q) -> bool:
    """Whether the Triton kernels can run on `q`'s device and layout (CUDA, Triton importable, head_dim a power of
    two of at least 16, the dtypes tl.dot takes)."""
    import torch

    d = q.shape[-1]
    return (
        q.is_cuda
        and q.dtype in (torch.bfloat16, torch.float16, torch.float32)
        and d >= 16
        and d & (d - 1) == 0
        and _kernels() is not None
    )


def triton_split_attention(q, k_cache, v_cache, live, span, *, splits: int, scale: float):
    """Attention of q (rows, kv_heads, groups, D) over positions [0, live[row]) of each row's K/V, cut into `splits`
    parts of `span` keys (a device scalar), merged exactly. Returns (rows, kv_heads, groups, D) in q's dtype."""
    import torch

    split_attention, merge_splits = _kernels()
    q = q.contiguous()  # the kernels index every tensor as contiguous (a no-op for the decoder's own)
    if not (k_cache.is_contiguous() and v_cache.is_contiguous()):
        raise ValueError("the Triton decode kernels need contiguous K/V buffers")
    rows, kv_heads, groups, d = q.shape
    g_pad = max(16, 1 << (groups - 1).bit_length())  # tl.dot wants at least 16 rows
    partial = torch.empty(rows * kv_heads, splits, g_pad, d, dtype=torch.float32, device=q.device)
    lse = torch.empty(rows * kv_heads, splits, g_pad, dtype=torch.float32, device=q.device)
    out = torch.empty_like(q)
    split_attention[(splits, rows * kv_heads)](
        q, k_cache, v_cache, live, span, partial, lse, scale, kv_heads, k_cache.shape[2],
        G=groups, G_PAD=g_pad, D=d, BLOCK_N=BLOCK_KEYS, SPLITS=splits, IEEE=q.dtype == torch.float32,
    )
    merge_splits[(rows * kv_heads,)](partial, lse, out, G=groups, G_PAD=g_pad, D=d, SPLITS=splits)
    return out
