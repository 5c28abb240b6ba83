"""Attention for a suffix whose keys start with a cached prefix (bottom-right causal), on the fastest kernel.

Usage: out = attend(q, k, v, q_start=prefix_len, kernel="cudnn", scale=module.scaling, plans=run_plans)
       out = attend_tiles(q, k_buffer, v_buffer, q_start=prefix_len, tile=1024, kernel="cudnn", scale=...)

Shapes: q (B, Hq, T, D) for positions [q_start, q_start + T); k, v (B, Hkv, q_start + T, D); out like q.

Why not one masked call: on Hopper the cuDNN kernel runs plain causal attention at about twice FA2's rate but
drops below FA2 once a lower-right causal mask is passed (docs/performance.md). So a suffix's attention is split
into the rectangle over the cached prefix (no mask) and the causal square over itself, each run on the fused
kernel that also returns its log-sum-exp, and the two partial results are merged exactly ("merge attention
states", as in cascade attention). Grouped-query heads are folded into the query length for the rectangle, so the
cached prefix's K/V are never expanded; only the suffix's own K/V are, for the square.

Which kernel each call runs is kanana_longctx.kernels.choice's decision; `plans` is the run's record of the
shapes cuDNN has planned (a fresh one per top-level call where none is given).
"""

from __future__ import annotations

import functools

import torch
import torch.nn.functional as F

from kanana_longctx.kernels.choice import (
    CudnnPlans, edge_kernel, lse_kernel_available, lse_op, plain_call_kernel, sdpa_context,
)
from kanana_longctx.kernels.merge import fused_merge, fused_merge_available, merge_tiles_into, tiles_merge_available

# Tiles of one group of `_padded_tiles`: their causal squares run as one batched call (cuDNN then plans squares for
# batches of 1 to 8 tiles, where one plan per tile count cost ~60 ms each, ~30 of them in a 32K grid), and their
# merges as one launch (merge.merge_tiles_into): the rectangles' outputs wait, stacked, for it, about 2 x 8 x 8 MB
# of an 8B tile beside the chunk, far below the chunk's MLP peak that the memory plan counts. A batch of 8 squares
# of 1024 rows is 8 x heads x 8 thread blocks of 128 rows, enough to fill the GPU.
TILE_GROUP = 8


def attention_with_lse(q, k, v, *, causal: bool, scale: float, kernel: str, recurring: bool = False, plans=None):
    """(out, lse) for equal head counts. lse is float32 (B, H, T). Falls back to a float32 reference."""
    B, H, T, _ = q.shape
    plans = plans if plans is not None else CudnnPlans()
    op = lse_op(q, k.shape[2], causal=causal, kernel=kernel, plans=plans, recurring=recurring)
    if op == "cudnn":
        res = torch.ops.aten._scaled_dot_product_cudnn_attention(q, k, v, None, True, 0.0, causal, False, scale=scale)
        return res[0], res[1].reshape(B, H, T).float()
    if op == "efficient":
        res = torch.ops.aten._scaled_dot_product_efficient_attention(q, k, v, None, True, 0.0, causal, scale=scale)
        return res[0], res[1][..., :T].reshape(B, H, T).float()
    if op == "flash":
        res = torch.ops.aten._scaled_dot_product_flash_attention(q, k, v, 0.0, causal, False, scale=scale)
        return res[0], res[1].reshape(B, H, T).float()
    if op == "flash_cpu":
        res = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu(q, k, v, 0.0, causal, scale=scale)
        return res[0], res[1].reshape(B, H, T).float()
    return reference_attention_with_lse(q, k, v, causal=causal, scale=scale)


def reference_attention_with_lse(q, k, v, *, causal: bool, scale: float, bias=None):
    """Plain float32 attention with top-left causal mask (T == S for causal) and an optional additive bias (-inf
    masks a key; lse is -inf where every key is masked). For tests and odd devices."""
    scores = torch.matmul(q.float(), k.float().transpose(-1, -2)) * scale
    if bias is not None:
        scores = scores + bias.float()
    if causal:
        T, S = scores.shape[-2:]
        mask = torch.ones(T, S, dtype=torch.bool, device=q.device).tril(S - T)
        scores = scores.masked_fill(~mask, float("-inf"))
    lse = torch.logsumexp(scores, dim=-1)
    out = torch.matmul(torch.softmax(scores, dim=-1), v.float()).to(q.dtype)
    return out, lse


def merge_states(o1, lse1, o2, lse2):
    """Combine two partial softmax-attention results over disjoint key sets, exactly, in float32 (one fused kernel
    on CUDA where it applies, kanana_longctx.kernels.merge)."""
    if fused_merge_available(o1, o2):
        return fused_merge(o1, lse1, o2, lse2)
    m = torch.maximum(lse1, lse2)
    w1 = torch.exp(lse1 - m).unsqueeze(-1)
    w2 = torch.exp(lse2 - m).unsqueeze(-1)
    out = (o1.float() * w1 + o2.float() * w2) / (w1 + w2)
    return out.to(o1.dtype)


def _fold_groups(q, hkv: int):
    """(B, Hq, T, D) -> (B, Hkv, G*T, D): query heads that share a kv head become extra query rows."""
    B, Hq, T, D = q.shape
    return q.reshape(B, hkv, (Hq // hkv) * T, D)


def _unfold_groups(x, hq: int, T: int):
    B = x.shape[0]
    return x.reshape(B, hq, T, *x.shape[3:]) if x.dim() == 4 else x.reshape(B, hq, T)


def _expand_kv(x, groups: int):
    return x if groups == 1 else x.repeat_interleave(groups, dim=1)


def attend(q, k, v, *, q_start: int, kernel: str, scale: float, plans=None):
    """Causal attention of queries at [q_start, q_start+T) over keys [0, q_start+T)."""
    plans = plans if plans is not None else CudnnPlans()
    B, Hq, T, D = q.shape
    Hkv = k.shape[1]
    groups = Hq // Hkv
    if kernel == "eager":
        out, _ = reference_attention_with_lse(q, _expand_kv(k, groups), _expand_kv(v, groups), causal=True, scale=scale)
        return out
    if q_start == 0 or T == 1:
        # Plain causal prefill (square) or one decode query (sees every key): one fused call, no mask needed.
        kernel = plain_call_kernel(q, k.shape[2], kernel=kernel, plans=plans)
        with sdpa_context(kernel, q.device):
            return F.scaled_dot_product_attention(
                q, k, v, is_causal=(q_start == 0 and T > 1), scale=scale, enable_gqa=groups > 1
            )
    if not lse_kernel_available(kernel, q.device):
        from torch.nn.attention.bias import causal_lower_right

        with sdpa_context(kernel, q.device):
            return F.scaled_dot_product_attention(
                q, _expand_kv(k, groups), _expand_kv(v, groups), attn_mask=causal_lower_right(T, q_start + T), scale=scale
            )
    # Rectangle: every suffix query sees every cached prefix key.
    o_rect, lse_rect = attention_with_lse(
        _fold_groups(q, Hkv), k[:, :, :q_start], v[:, :, :q_start], causal=False, scale=scale, kernel=kernel,
        plans=plans,
    )
    o_rect = _unfold_groups(o_rect, Hq, T)
    lse_rect = _unfold_groups(lse_rect, Hq, T)
    # Square: causal attention of the suffix over itself.
    o_sq, lse_sq = attention_with_lse(
        q, _expand_kv(k[:, :, q_start:], groups), _expand_kv(v[:, :, q_start:], groups), causal=True, scale=scale,
        kernel=kernel, plans=plans,
    )
    return merge_states(o_rect, lse_rect, o_sq, lse_sq)


def attend_tiles(q, k_buf, v_buf, *, q_start: int, tile: int, kernel: str, scale: float, plans=None):
    """Like `attend`, with keys read from whole KV buffers, computed on a fixed grid of `tile` positions.

    Why: cuDNN builds a plan for every new (q_len, kv_len), and NIAH probes start and end anywhere,
    so `attend` meets new shapes all the time. Here the queries are placed in zero-padded tiles [j*tile,
    (j+1)*tile) of fixed size: the causal squares of all n tiles of a call run as one (n x tile x tile) batch, and
    each tile's rectangle over the keys before it is (tile x j*tile). A whole 128K grid then needs about 128K / tile
    rectangle plans and one square plan per tile count. Padded rows cost attention work only (no projections or
    MLP) and are dropped. Keys after the last query in its tile are stale buffer contents that the causal mask
    hides from every real query. One batched square instead of a call per tile: a lone 1024-token causal square is
    too little work to fill a large GPU, a batch of them runs near the kernel's full rate.

    A first or last tile with fewer than half its rows real runs at its exact shape instead (`attend`, on
    `choice.edge_kernel`: FA2 when the tiles run on cuDNN: no plan to build, about half cuDNN's rate, so cheaper
    than a padded tile below half):
    the question of a probe whose haystack is shared, a needle at the very end, and the ragged ends of every suffix.

    Shapes: q (B, Hq, T, D) for positions [q_start, q_start + T), already written into k_buf/v_buf (B, Hkv, N, D)
    with N >= the end of the last tile. Returns (B, Hq, T, D), a transposed view of a (B, T, Hq, D) tensor.
    """
    B, Hq, T, D = q.shape
    end = q_start + T
    if k_buf.shape[2] < end + (-end % tile):
        raise ValueError(f"the KV buffer ({k_buf.shape[2]}) must reach the end of the last tile")
    first = q_start - q_start % tile
    n = -(-(end - first) // tile)
    plans = plans if plans is not None else CudnnPlans()
    exact_kernel = edge_kernel(kernel)
    lo, hi = 0, n  # tiles [lo, hi) run padded; the ragged ends below half a tile run exactly
    if min(end, first + tile) - q_start < tile // 2:
        lo = 1
    if hi > lo and end - max(q_start, first + (n - 1) * tile) < tile // 2:
        hi = n - 1
    out = q.new_empty(B, T, Hq, D)
    for j in sorted({0, n - 1}):
        if lo <= j < hi:
            continue
        a, b = max(q_start, first + j * tile), min(end, first + (j + 1) * tile)
        o = attend(
            q[:, :, a - q_start : b - q_start], k_buf[:, :, :b], v_buf[:, :, :b], q_start=a, kernel=exact_kernel,
            scale=scale, plans=plans,
        )
        out[:, a - q_start : b - q_start] = o.transpose(1, 2)
    if hi > lo:
        _padded_tiles(q, k_buf, v_buf, out, q_start, first + lo * tile, hi - lo, tile, kernel, scale, plans)
    return out.transpose(1, 2)


def _query_tiles(q, q_start: int, first: int, lo: int, hi: int, n: int, tile: int):
    """The queries of positions [lo, hi) placed in n zero-padded tiles from position `first`, laid out
    (B, n, Hq, tile, D) so that each tile is one contiguous block: at most three copies (a partial first tile, the
    whole ones, a partial last tile) straight into that layout, from q in any layout."""
    B, Hq, _, D = q.shape
    tiles = q.new_zeros(B, n, Hq, tile, D)
    a = lo
    while a < hi:
        j, row = divmod(a - first, tile)
        src = a - q_start
        if row == 0 and hi - a >= tile:
            m = (hi - a) // tile
            tiles[:, j : j + m] = q[:, :, src : src + m * tile].unflatten(2, (m, tile)).transpose(1, 2)
            a += m * tile
        else:
            b = min(hi, first + (j + 1) * tile)
            tiles[:, j, :, row : row + b - a] = q[:, :, src : src + b - a]
            a = b
    return tiles


def _kv_tiles(buf, start: int, m: int, tile: int, expand: int):
    """Buffer positions [start, start + m * tile) as m tiles (B * m, Hkv, tile, D): a view of the buffer where B is
    1, kv heads repeated `expand` times where the kernel cannot read grouped heads."""
    B, Hkv, _, D = buf.shape
    x = buf[:, :, start : start + m * tile].unflatten(2, (m, tile)).transpose(1, 2).reshape(B * m, Hkv, tile, D)
    return _expand_kv(x, expand)


@functools.cache
def _grouped_squares_work(device_index: int, head_dim: int, dtype) -> bool:
    """Whether cuDNN's causal attention reads grouped K/V heads (fewer than the query heads) from strided tile
    views of a buffer, as `_padded_tiles` passes them, and gives what it gives on repeated heads: proven once per
    process on a small case (two plans of 64-row tiles), since a wrong answer here would be silent."""
    try:
        device = torch.device("cuda", device_index)
        gen = torch.Generator(device=device).manual_seed(0)
        q = torch.randn(2, 4, 64, head_dim, device=device, dtype=dtype, generator=gen)
        buf = torch.randn(1, 2, 192, head_dim, device=device, dtype=dtype, generator=gen)
        k, v = _kv_tiles(buf, 64, 2, 64, 1), _kv_tiles(buf.flip(2), 64, 2, 64, 1)
        op = torch.ops.aten._scaled_dot_product_cudnn_attention
        grouped = op(q, k, v, None, True, 0.0, True, False, scale=0.1)
        repeated = op(q, _expand_kv(k, 2), _expand_kv(v, 2), None, True, 0.0, True, False, scale=0.1)
        close = all(torch.allclose(a.float(), b.float(), atol=1e-2, rtol=1e-2) for a, b in zip(grouped[:2], repeated[:2]))
        return bool(close)
    except Exception:  # noqa: BLE001 - missing or refusing grouped heads: the squares repeat them
        return False


def _squares_read_grouped_heads(q, kernel: str, groups: int) -> bool:
    return groups > 1 and kernel == "cudnn" and q.is_cuda and q.dtype != torch.float32 and _grouped_squares_work(
        q.device.index if q.device.index is not None else torch.cuda.current_device(), q.shape[-1], q.dtype
    )


def _padded_tiles(q, k_buf, v_buf, out, q_start: int, first: int, n: int, tile: int, kernel: str, scale: float, plans):
    """The n tiles from position `first` (a tile boundary) of `attend_tiles`, written into `out` (B, T, Hq, D).

    They run in groups of TILE_GROUP: one batched call of the group's causal squares (so cuDNN plans squares for
    batches of 1 to TILE_GROUP tiles only, not for every tile count a call brings), each tile's rectangle over the
    keys before it, then one merge launch for the group's rectangles where it applies."""
    B, Hq, T, D = q.shape
    Hkv = k_buf.shape[1]
    groups = Hq // Hkv
    end = q_start + T
    lo, hi = max(q_start, first), min(end, first + n * tile)  # the real rows these tiles hold
    q_tiles = _query_tiles(q, q_start, first, lo, hi, n, tile)
    expand = 1 if _squares_read_grouped_heads(q, kernel, groups) else groups
    for g0 in range(0, n, TILE_GROUP):
        m = min(n, g0 + TILE_GROUP) - g0
        o_sq, lse_sq = attention_with_lse(
            q_tiles[:, g0 : g0 + m].reshape(B * m, Hq, tile, D),
            _kv_tiles(k_buf, first + g0 * tile, m, tile, expand), _kv_tiles(v_buf, first + g0 * tile, m, tile, expand),
            causal=True, scale=scale, kernel=kernel, recurring=True, plans=plans,
        )
        o_sq, lse_sq = o_sq.view(B, m, Hq, tile, D), lse_sq.view(B, m, Hq, tile)
        _merge_group(q_tiles[:, g0 : g0 + m], k_buf, v_buf, out, o_sq, lse_sq, q_start, first + g0 * tile, kernel,
                     scale, plans)


def _merge_group(q_tiles, k_buf, v_buf, out, o_sq, lse_sq, q_start: int, group_first: int, kernel, scale, plans):
    """One group of `_padded_tiles`, its m tiles from position `group_first`: each tile's rectangle over the keys
    before it, merged with its square (o_sq, lse_sq: the group's squares) and its real rows written into `out`.
    q_tiles: the group's query tiles (B, m, Hq, tile, D)."""
    _, m, Hq, tile, _ = q_tiles.shape
    Hkv = k_buf.shape[1]
    end = q_start + out.shape[1]
    batched = tiles_merge_available(out, o_sq)
    pending: list = []  # rectangles (o, lse) of the group's tiles, merged together (merge.py: why)
    for j in range(m):
        t0 = group_first + j * tile
        a, b = max(q_start, t0), min(end, t0 + tile)
        o = o_sq[:, j]
        if t0 == 0:  # nothing before it: the square is the whole answer
            out[:, a - q_start : b - q_start] = o[:, :, a - t0 : b - t0].transpose(1, 2)
            continue
        o_rect, lse_rect = attention_with_lse(
            _fold_groups(q_tiles[:, j], Hkv), k_buf[:, :, :t0], v_buf[:, :, :t0],
            causal=False, scale=scale, kernel=kernel, recurring=True, plans=plans,
        )
        o_rect, lse_rect = _unfold_groups(o_rect, Hq, tile), _unfold_groups(lse_rect, Hq, tile)
        if not batched:
            o = merge_states(o_rect, lse_rect, o, lse_sq[:, j])
            out[:, a - q_start : b - q_start] = o[:, :, a - t0 : b - t0].transpose(1, 2)
            continue
        pending.append((o_rect, lse_rect))
    if pending:
        merge_tiles_into(
            out, torch.stack([p[0] for p in pending], 1), torch.stack([p[1] for p in pending], 1), o_sq, lse_sq,
            j0=m - len(pending), first=group_first, q_start=q_start,
        )
