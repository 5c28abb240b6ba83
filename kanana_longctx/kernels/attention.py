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

import torch
import torch.nn.functional as F

from kanana_longctx.kernels.choice import (
    CudnnPlans, edge_kernel, lse_kernel_available, lse_op, plain_call_kernel, sdpa_context,
)
from kanana_longctx.kernels.merge import fused_merge, fused_merge_available, merge_tiles_into, tiles_merge_available

# Tiles whose merges run as one launch (merge.merge_tiles_into): their rectangles' outputs wait, stacked, for it,
# about 2 x 8 x 8 MB of an 8B tile beside the chunk, far below the chunk's MLP peak that the memory plan counts.
MERGE_TILES = 8


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


def _padded_tiles(q, k_buf, v_buf, out, q_start: int, first: int, n: int, tile: int, kernel: str, scale: float, plans):
    """The n tiles from position `first` (a tile boundary) of `attend_tiles`, written into `out` (B, T, Hq, D)."""
    B, Hq, T, D = q.shape
    Hkv = k_buf.shape[1]
    groups = Hq // Hkv
    end = q_start + T
    lo, hi = max(q_start, first), min(end, first + n * tile)  # the real rows these tiles hold
    # Queries padded to whole tiles, laid out (B, n, Hq, tile, D) so that each tile is one contiguous block.
    padded = q.new_zeros(B, Hq, n * tile, D)
    padded[:, :, lo - first : hi - first] = q[:, :, lo - q_start : hi - q_start]
    q_tiles = padded.view(B, Hq, n, tile, D).transpose(1, 2).contiguous()

    def tiles_of(buf):  # the same tiles of the buffer's keys or values, kv heads expanded: (B * n, Hq, tile, D)
        x = buf[:, :, first : first + n * tile].reshape(B, Hkv, n, tile, D).transpose(1, 2)
        return _expand_kv(x.reshape(B * n, Hkv, tile, D), groups)

    o_sq, lse_sq = attention_with_lse(
        q_tiles.view(B * n, Hq, tile, D), tiles_of(k_buf), tiles_of(v_buf),
        causal=True, scale=scale, kernel=kernel, recurring=True, plans=plans,
    )
    o_sq, lse_sq = o_sq.view(B, n, Hq, tile, D), lse_sq.view(B, n, Hq, tile)
    batched = tiles_merge_available(out, o_sq)
    pending: list = []  # rectangles (o, lse) of tiles j - len(pending) + 1 .. j, merged together (merge.py: why)
    for j in range(n):
        t0 = first + j * tile
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
        if len(pending) == MERGE_TILES or j == n - 1:
            merge_tiles_into(
                out, torch.stack([p[0] for p in pending], 1), torch.stack([p[1] for p in pending], 1), o_sq, lse_sq,
                j0=j + 1 - len(pending), first=first, q_start=q_start,
            )
            pending = []
