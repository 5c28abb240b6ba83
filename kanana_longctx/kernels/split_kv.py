"""The decode step's attention: split-KV ("flash decoding"), masked or reading only live keys (torch).

Usage: out = split_kv_attention(q, k_cache, v_cache, mask_bias(mask, ...), capacity=c, splits=s, scale=...)
       layout = SplitLayout(rows, kv_heads, groups, buffer_tokens, splits, device); layout.fit(end)
       out = split_kv_attention_varlen(q, k_cache, v_cache, layout.seqlen_k(live), layout, scale=...)

One decode query per kv head is too little work to fill a GPU, so each row's keys are cut into splits that run as
separate sequences of one memory-efficient-attention call, each returning its log-sum-exp, and the partial results
are merged exactly. The splits are views of the KV buffer (no copy). In the variable-length mode each split is told
how many of its keys are live, and the kernel reads the splits' offsets and live counts from device memory, so one
CUDA graph serves every cut (`SplitLayout.fit`). How many splits is kernels.choice's decision. On the CPU (tests)
the same runs on a float32 reference that marks the results a caller must mask, so that a missing mask fails there.
"""

from __future__ import annotations

import torch

from kanana_longctx.kernels import choice
from kanana_longctx.kernels.attention import reference_attention_with_lse


def _partial_attention(q, k, v, bias, scale: float):
    """(out, lse) of attention with an additive bias. For a row whose keys are all masked, the GPU kernel's lse is
    not -inf (merged as it came, such splits made the result wrong: docs/performance.md), so callers must mask it; off
    CUDA such a row gets a huge lse, so that a caller which forgets fails in the CPU tests too."""
    op = getattr(torch.ops.aten, "_scaled_dot_product_efficient_attention", None)
    if q.is_cuda and op is not None:
        res = op(q, k, v, bias, True, 0.0, False, scale=scale)
        return res[0], res[1][..., : q.shape[2]]
    out, lse = reference_attention_with_lse(q, k, v, causal=False, scale=scale, bias=bias)
    return out, lse.masked_fill(torch.isneginf(lse), 1e4)


def split_lengths(live: torch.Tensor, *, splits: int, span) -> torch.Tensor:
    """Live keys in each split of each row, (rows, splits) int32: a row's live keys are positions [0, live).
    `span` (keys per split): an int, or a device scalar (inside a CUDA graph, where it changes between replays)."""
    starts = torch.arange(splits, device=live.device) * span
    lengths = (live[:, None] - starts).clamp(min=0)
    return torch.minimum(lengths, span if torch.is_tensor(span) else torch.full_like(lengths, span)).to(torch.int32)


def _varlen_attention(q, k, v, seqstart_q, seqstart_k, seqlen_k, max_q: int, max_k: int, scale: float):
    """The memory-efficient kernel's variable-length mode: sequence b has queries q[0, seqstart_q[b]:
    seqstart_q[b + 1]] and keys k[0, seqstart_k[b] : seqstart_k[b] + seqlen_k[b]] (one head; layout (1, M, 1, D)).
    Returns (out like q, lse (sequences, max_q)).

    A sequence without keys gets no output at all: the CUDA kernel leaves its out and lse as the fresh memory
    held (zeros in one call, stale values in the next), so callers must mask them by
    `seqlen_k`. Off CUDA the same runs in float32, one sequence at a time (tests), and such a sequence gets
    NaN out and a huge lse, so that a caller which forgets the mask fails there too."""
    if q.is_cuda:
        res = torch.ops.aten._efficient_attention_forward(
            q, k, v, None, seqstart_q, seqstart_k, max_q, max_k, 0.0, 0, True, scale=scale, seqlen_k=seqlen_k
        )
        return res[0], res[1][:, 0, :max_q]
    n = seqlen_k.numel()
    out = torch.full_like(q, float("nan"))
    lse = torch.full((n, max_q), 1e4, device=q.device)
    for b in range(n):
        q0, q1, k0 = int(seqstart_q[b]), int(seqstart_q[b + 1]), int(seqstart_k[b])
        k1 = k0 + int(seqlen_k[b])
        if k1 > k0:
            o, l = reference_attention_with_lse(
                q[:, q0:q1].transpose(1, 2), k[:, k0:k1].transpose(1, 2), v[:, k0:k1].transpose(1, 2),
                causal=False, scale=scale,
            )
            out[:, q0:q1] = o.transpose(1, 2)
            lse[b, : q1 - q0] = l[0, 0]
    return out, lse


class SplitLayout:
    """The index tensors of variable-length split-KV decoding: every (row, kv head, split) is one sequence of
    `groups` queries whose keys start at its split of the row's buffer. The split length lives on the device, so
    `fit` re-cuts the splits for a new batch in place and a graph captured once reads the new cut."""

    def __init__(self, rows: int, kv_heads: int, groups: int, buffer_tokens: int, splits: int, device,
                 min_keys: int | None = None):
        """`min_keys`: the shortest split `fit` cuts (None: choice.SPLIT_MIN_KEYS, the memory-efficient kernel's)."""
        self.rows, self.kv_heads, self.groups, self.splits = rows, kv_heads, groups, splits
        self.buffer_tokens = buffer_tokens
        self.min_keys = choice.SPLIT_MIN_KEYS if min_keys is None else min_keys
        n = rows * kv_heads * splits
        self.seqstart_q = (torch.arange(n + 1, device=device) * groups).to(torch.int32)
        self.seqstart_k = torch.zeros(n + 1, dtype=torch.int32, device=device)
        self.span = torch.zeros((), dtype=torch.long, device=device)  # keys per split, read by the graph
        self.max_span = 0
        self.fit(buffer_tokens)

    def fit(self, end: int) -> int:
        """Cut the splits so that they cover positions [0, end) of every row, each >= `min_keys` keys long
        (or an equal share of the buffer, when that is shorter); returns the split length. Runs outside graphs."""
        floor = min(self.min_keys, -(-self.buffer_tokens // self.splits))
        span = max(-(-end // self.splits), floor)
        self.span.fill_(span)
        first = torch.arange(self.rows * self.kv_heads, device=self.span.device)[:, None] * self.buffer_tokens
        starts = (first + torch.arange(self.splits, device=self.span.device) * span).reshape(-1)
        self.seqstart_k[:-1].copy_(starts)
        self.seqstart_k[-1:].copy_(starts[-1:] + span)
        self.max_span = span
        return span

    def seqlen_k(self, live: torch.Tensor) -> torch.Tensor:
        lengths = split_lengths(live, splits=self.splits, span=self.span)  # (rows, splits)
        return lengths[:, None, :].expand(self.rows, self.kv_heads, self.splits).reshape(-1).contiguous()


def split_kv_attention_varlen(q, k_cache, v_cache, seqlen_k, layout: SplitLayout, *, scale: float):
    """`split_kv_attention` reading only live keys: `seqlen_k` from `layout.seqlen_k(live)`. k/v_cache: the whole
    (rows, kv_heads, N, D) buffers of one layer (contiguous)."""
    rows, hkv, g, d = q.shape
    splits = layout.splits
    qs = q[:, :, None].expand(rows, hkv, splits, g, d).reshape(1, rows * hkv * splits * g, 1, d)
    k = k_cache.view(1, -1, 1, d)
    v = v_cache.view(1, -1, 1, d)
    # max_k: an upper bound of any split (the buffer); each sequence's key count comes from seqlen_k.
    out, lse = _varlen_attention(qs, k, v, layout.seqstart_q, layout.seqstart_k, seqlen_k, g, layout.buffer_tokens, scale)
    lse = lse.masked_fill(seqlen_k[:, None] == 0, float("-inf"))  # splits without live keys: nothing was written
    return _merge_splits(out.view(rows * hkv, splits, g, d), lse.view(rows * hkv, splits, g), q)


def _merge_splits(out, lse, q):
    """Exact merge of per-split results (rows * kv_heads, splits, groups, D) by their log-sum-exp."""
    rows, hkv, g, d = q.shape
    top = lse.amax(dim=1, keepdim=True)
    weight = torch.exp(lse - top).nan_to_num(0.0)  # a split with no live key weighs 0
    merged = (out.float().nan_to_num(0.0) * weight.unsqueeze(-1)).sum(1) / weight.sum(1).unsqueeze(-1)
    return merged.to(q.dtype).reshape(rows, hkv, g, d)


def mask_bias(mask: torch.Tensor, rows: int, kv_heads: int, splits: int, groups: int, dtype) -> torch.Tensor:
    """The (rows, capacity) live-key mask as the additive bias of `split_kv_attention`."""
    span = mask.shape[-1] // splits
    live = mask.reshape(rows, 1, splits, 1, span).expand(rows, kv_heads, splits, groups, span)
    bias = torch.zeros(live.shape, dtype=dtype, device=mask.device).masked_fill_(~live, float("-inf"))
    return bias.reshape(rows * kv_heads, splits, groups, span)


def split_kv_attention(q, k_cache, v_cache, bias, *, capacity: int, splits: int, scale: float):
    """Decode attention over the first `capacity` positions of the KV buffers, in `splits` parts merged by their
    log-sum-exp. q: (rows, kv_heads, groups, D), grouped query heads folded into rows; k/v_cache: (rows, kv_heads,
    N, D); bias: (rows * kv_heads, splits, groups, capacity / splits), 0 for live keys and -inf elsewhere.
    Returns (rows, kv_heads, groups, D)."""
    rows, hkv, g, d = q.shape
    span = capacity // splits
    k = k_cache[:, :, :capacity].reshape(rows * hkv, splits, span, d)  # views: no copy of the cache
    v = v_cache[:, :, :capacity].reshape(rows * hkv, splits, span, d)
    qs = q.reshape(rows * hkv, 1, g, d).expand(rows * hkv, splits, g, d).contiguous()
    out, lse = _partial_attention(qs, k, v, bias, scale)  # (rows*hkv, splits, g, d), (rows*hkv, splits, g)
    has_keys = torch.isfinite(bias).any(-1)  # a split whose keys are all masked weighs nothing (its lse is junk)
    return _merge_splits(out, lse.masked_fill(~has_keys, float("-inf")), q)
