"""Greedy decoding replayed from CUDA graphs: one graph for every batch of a run, or one per KV-capacity bucket.

Usage: tokens = GraphDecoder(fast).generate(first_token, position, max_new_tokens, stop)
       outputs = GraphDecoder(fast).generate_rows([(row, first_token, position, stop), ...], max_new_tokens)

Why: an eager decode step of an 8B model launches ~1,500 small kernels; on the H100 host that is ~35-50 ms of CPU
time for ~6 ms of GPU work (measured, bench/kernels.py). A captured step needs no host work: the graph reads the
current token and position from device tensors, writes K/V at that position, computes the next token with argmax
and feeds it back, so each replay is one decode step. Grouped query heads are folded into the query rows so no K/V
is ever expanded.

Split-KV attention ("flash decoding"): one decode query per kv head is too little work to fill the GPU (one
thread block per row and kv head streams the whole sequence: 8 of 132 SMs busy for one row at 128K), so each row's
keys are cut into splits that run as separate sequences of one memory-efficient-attention call, each returning
its log-sum-exp, and the partial results are merged exactly. The splits are views of the buffer (no copy). Each
split is told how many of its keys are live (the kernel's variable-length mode), so a row reads only its own
prompt. The kernel reads the splits' offsets and live counts from device memory, so the split length is cut to fit
each batch (`SplitLayout.fit`) and a single graph serves every batch of a run: no capture per batch length.

Where that mode is missing or fails a check (`varlen_works`), shapes must be static: attention runs over a fixed
capacity (a few buckets per doubling, >= 4096, at most the buffer, one graph each) and a -inf bias masks the dead
keys, which the kernel still reads. On the CPU (tests) one masked SDPA call over the capacity replaces the splits.

Every row of the fast engine's KV buffers steps at once (one weight read per step for all of them: decoding is
memory-bound, so a batch of probes costs little more than one). Rows without a probe are parked on a scratch
position past every live one and do not advance.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from kanana_longctx.kernels.attention import reference_attention_with_lse
from kanana_longctx.fastpath.llama import module_qkv

MIN_BUCKET = 4096
SPLIT_MIN_KEYS = 1024  # keys per split at least: below this a split's fixed cost outweighs its share of the work


def choose_splits(rows: int, kv_heads: int, capacity: int, sms: int) -> int:
    """Splits of the capacity for split-KV decoding: a power of two dividing the capacity into splits of
    >= SPLIT_MIN_KEYS keys (a multiple of 16: the kernel's bias alignment), enough for ~2 thread blocks per SM
    (rows x kv heads x splits of them)."""
    splits = 1
    while (
        rows * kv_heads * splits < 2 * sms
        and capacity % (splits * 2) == 0
        and capacity // (splits * 2) >= SPLIT_MIN_KEYS
        and capacity // (splits * 2) % 16 == 0
    ):
        splits *= 2
    return splits


def live_split_count(rows: int, kv_heads: int, buffer_tokens: int, sms: int) -> int:
    """Splits per row for the variable-length layout: a power of two giving ~2 thread blocks per SM (rows x kv
    heads x splits of them) while a split of the whole buffer keeps >= SPLIT_MIN_KEYS keys. No divisibility is
    needed: split lengths are cut per batch (`SplitLayout.fit`)."""
    splits = 1
    while rows * kv_heads * splits < 2 * sms and buffer_tokens // (splits * 2) >= SPLIT_MIN_KEYS:
        splits *= 2
    return splits


def _partial_attention(q, k, v, bias, scale: float):
    """(out, lse) of attention with an additive bias. For a row whose keys are all masked, the GPU kernel's lse is
    not -inf (measured: merged as it came, such splits made the result 90% wrong), so callers must mask it; off
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
    held (on the H100 that was zeros in one call and stale values in the next), so callers must mask them by
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

    def __init__(self, rows: int, kv_heads: int, groups: int, buffer_tokens: int, splits: int, device):
        self.rows, self.kv_heads, self.groups, self.splits = rows, kv_heads, groups, splits
        self.buffer_tokens = buffer_tokens
        n = rows * kv_heads * splits
        self.seqstart_q = (torch.arange(n + 1, device=device) * groups).to(torch.int32)
        self.seqstart_k = torch.zeros(n + 1, dtype=torch.int32, device=device)
        self.span = torch.zeros((), dtype=torch.long, device=device)  # keys per split, read by the graph
        self.max_span = 0
        self.fit(buffer_tokens)

    def fit(self, end: int) -> int:
        """Cut the splits so that they cover positions [0, end) of every row, each >= SPLIT_MIN_KEYS keys long
        (or an equal share of the buffer, when that is shorter); returns the split length. Runs outside graphs."""
        floor = min(SPLIT_MIN_KEYS, -(-self.buffer_tokens // self.splits))
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


def capture_graph(fn, *, prepare=lambda: None, warmups: int = 2):
    """Record `fn` into a CUDA graph after `warmups` calls on a side stream (lazy allocations and library
    initialisation must not happen during capture); `prepare` runs before every warm-up call and before the
    capture, outside the graph. Returns (graph, what the recorded call returned)."""
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        for _ in range(warmups):
            prepare()
            fn()
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    prepare()
    with torch.cuda.graph(graph):
        out = fn()
    return graph, out


def varlen_works(device) -> tuple[bool, str]:
    """Whether the kernel's variable-length mode gives exact attention here, eagerly and replayed from a CUDA
    graph captured under another cut of the splits (it is a private op: its arguments may change between torch
    releases, and the decoder relies on it reading offsets and key counts from device memory at every replay).
    Float32, so that any error beyond rounding shows, with a split that has no live key and freed memory full of
    junk beforehand, so that an output the kernel does not write cannot pass for a right one."""
    if device.type != "cuda":
        return True, ""
    try:
        gen = torch.Generator(device=device).manual_seed(0)
        rows, hkv, g, d, n, splits = 2, 2, 4, 128, 16384, 2
        q, k, v = (torch.randn(rows, hkv, length, d, device=device, generator=gen) for length in (g, n, n))
        live = torch.tensor([1000, 2900], device=device)
        expected = torch.cat([
            reference_attention_with_lse(q[r : r + 1].double(), k[r : r + 1, :, :n].double(), v[r : r + 1, :, :n].double(),
                                         causal=False, scale=0.1)[0]
            for r, n in enumerate(live.tolist())
        ])
        layout = SplitLayout(rows, hkv, g, n, splits, device)  # cut for the whole buffer: 2 x 8192 keys
        graph, replayed = capture_graph(
            lambda: split_kv_attention_varlen(q, k, v, layout.seqlen_k(live), layout, scale=0.1), warmups=1
        )
        layout.fit(3000)  # 2 x 1500 keys, row 0's second split empty: the graph must read the new cut
        for _ in range(4):  # junk in freed blocks of the sizes the kernel allocates
            torch.full((1 << 16,), 1e4, device=device)
        eager = split_kv_attention_varlen(q, k, v, layout.seqlen_k(live), layout, scale=0.1)
        graph.replay()
        torch.cuda.synchronize()
        for got in (eager, replayed):
            err = float((got.double() - expected).norm() / expected.norm())
            if not err < 1e-4:
                return False, f"variable-length split-KV differs from the masked call (rel. error {err:.1e})"
        return True, ""
    except Exception as exc:  # noqa: BLE001 - a private op that is missing or changed: use the masked call
        return False, f"variable-length split-KV unavailable ({type(exc).__name__})"


def _bias(mask: torch.Tensor, rows: int, kv_heads: int, splits: int, groups: int, dtype) -> torch.Tensor:
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


class GraphDecoder:
    def __init__(self, fast, splits: int | None = None, varlen: bool | None = None):
        """`splits`: split-KV parts per step (None: chosen from the GPU's SM count; 1 on CPU, where one fused
        SDPA call over the masked capacity runs instead). `varlen`: splits read only their live keys, cut per
        batch under one graph (None: where `varlen_works`); else per-capacity graphs with masked splits."""
        self.fast = fast
        self._splits = splits
        self.varlen_note = ""
        if varlen is None:
            varlen, self.varlen_note = varlen_works(fast.device)
        self.varlen = varlen
        self._sms = torch.cuda.get_device_properties(fast.device).multi_processor_count if fast.device.type == "cuda" else 0
        dev = fast.device
        rows = fast.rows
        self.layout = None  # the variable-length split layout, when decoding uses it
        if varlen:
            count = splits if splits is not None else live_split_count(rows, fast.n_kv, fast.max_tokens, self._sms) if self._sms else 1
            if count > 1:
                self.layout = SplitLayout(rows, fast.n_kv, fast.n_heads // fast.n_kv, fast.max_tokens, count, dev)
        self.token = torch.zeros(rows, dtype=torch.long, device=dev)
        self.position = torch.zeros(rows, dtype=torch.long, device=dev)
        self.advance = torch.ones(rows, dtype=torch.long, device=dev)  # 0 parks a row without a probe
        self.next_token = torch.zeros(rows, dtype=torch.long, device=dev)
        self._row_index = torch.arange(rows, device=dev)
        self._true = torch.ones(rows, dtype=torch.bool, device=dev)
        self._graphs: dict[int, tuple[torch.cuda.CUDAGraph | None, torch.Tensor | None]] = {}
        self.captures = 0  # graphs recorded so far (one per capacity bucket without the variable-length layout)

    def bucket(self, end: int) -> int:
        """The capacity for a sequence ending at `end`: the whole buffer with the variable-length layout (one
        graph); otherwise a multiple of a quarter of the power of two below it (>= MIN_BUCKET), so a masked step
        reads at most ~25% more KV than it needs, with ~4 graphs per doubling."""
        if self.layout is not None:
            return self.fast.max_tokens
        step = MIN_BUCKET
        while step * 8 <= end:
            step *= 2
        return min(-(-end // step) * step, self.fast.max_tokens)

    def splits(self, capacity: int) -> int:
        """Splits of a step over `capacity` keys."""
        if self.layout is not None:
            return self.layout.splits
        if self._splits is not None:
            splits = 1
            while splits * 2 <= self._splits and capacity % (splits * 2) == 0:
                splits *= 2
            return splits
        if not self._sms:
            return 1
        return choose_splits(self.fast.rows, self.fast.n_kv, capacity, self._sms)

    @property
    def scratch(self) -> int:
        """A position no probe uses (the buffer holds the longest probe plus its new tokens plus one)."""
        return self.fast.max_tokens - 1

    def _step(self, mask: torch.Tensor | None, capacity: int) -> None:
        """One decode step of every row on device tensors only (what the graph records). `mask`: the live keys of
        the masked attention (None with the variable-length layout, which counts them instead)."""
        fast = self.fast
        inner = fast.inner
        rows = fast.rows
        x = inner.embed_tokens(self.token[:, None])  # (rows, 1, hidden)
        cos, sin = inner.rotary_emb(x, self.position[:, None])
        cos, sin = cos.unsqueeze(1), sin.unsqueeze(1)
        # Clamped: parked rows and the warm-up sit at the scratch position, which may lie beyond a small bucket
        # (their mask is never used for real output, and real positions are always inside the capacity).
        seen = torch.clamp(self.position, max=capacity - 1)
        groups = fast.n_heads // fast.n_kv
        splits = self.splits(capacity)
        layout = self.layout
        if layout is not None:  # live keys per split: [0, position] of live rows, one key of parked ones
            seqlen_k = layout.seqlen_k(torch.where(self.advance > 0, seen + 1, 1))
        else:
            mask[self._row_index, 0, 0, seen] = self._true  # a device tensor: a Python True would be a host copy
            if splits > 1:  # the mask as an additive bias in the split layout, built once for all layers
                bias = _bias(mask[:, 0, 0], rows, fast.n_kv, splits, groups, x.dtype)
        for i, layer in enumerate(fast.layers):
            attn = layer.self_attn
            q, k, v = module_qkv(layer, x, cos, sin, fast.n_heads, fast.n_kv, fast.head_dim)  # (rows, heads, 1, d)
            fast.k_cache[i][self._row_index, :, self.position] = k[:, :, 0]
            fast.v_cache[i][self._row_index, :, self.position] = v[:, :, 0]
            qf = q.reshape(rows, fast.n_kv, groups, fast.head_dim)
            if layout is not None:
                o = split_kv_attention_varlen(qf, fast.k_cache[i], fast.v_cache[i], seqlen_k, layout, scale=attn.scaling)
            elif splits > 1:
                o = split_kv_attention(
                    qf, fast.k_cache[i], fast.v_cache[i], bias, capacity=capacity, splits=splits, scale=attn.scaling
                )
            else:
                o = F.scaled_dot_product_attention(
                    qf, fast.k_cache[i][:, :, :capacity], fast.v_cache[i][:, :, :capacity], attn_mask=mask,
                    scale=attn.scaling,
                )
            x = x + attn.o_proj(o.reshape(rows, 1, fast.n_heads * fast.head_dim))
            x = x + layer.mlp(layer.post_attention_layernorm(x))
        logits = fast.lm_head(inner.norm(x))[:, -1]
        self.next_token.copy_(torch.argmax(logits, dim=-1))
        self.token.copy_(self.next_token)
        self.position.add_(self.advance)

    def _graph(self, capacity: int):
        if capacity in self._graphs:
            return self._graphs[capacity]
        mask = None
        if self.layout is None:
            mask = torch.zeros(self.fast.rows, 1, 1, capacity, dtype=torch.bool, device=self.fast.device)
        self.captures += 1
        # Warm-up and capture write K/V at the scratch position, never over a live prefix.
        if self.fast.device.type != "cuda":  # no graphs off CUDA: the static step runs eagerly (tests)
            with torch.inference_mode():
                self.position.fill_(self.scratch)
                self._step(mask, capacity)
            self._graphs[capacity] = (None, mask)
            return None, mask
        with torch.inference_mode():
            graph, _ = capture_graph(
                lambda: self._step(mask, capacity), prepare=lambda: self.position.fill_(self.scratch)
            )
        self._graphs[capacity] = (graph, mask)
        return graph, mask

    def generate(self, first_token: int, position: int, max_new_tokens: int, stop, row: int = 0) -> list[int]:
        """Tokens after `first_token` (already chosen from the prefill logits) until stop or max_new_tokens."""
        return self.generate_rows([(row, first_token, position, stop)], max_new_tokens)[0]

    def generate_rows(self, requests, max_new_tokens: int) -> list[list[int]]:
        """`requests`: (row, first_token, position, stop) for distinct rows. Every output starts with its first
        token and ends at its stop or at max_new_tokens; all rows step together until the last one ends."""
        outs = [[first] for _, first, _, _ in requests]
        live = [i for i, (_, _, _, stop) in enumerate(requests) if max_new_tokens > 1 and not stop(outs[i])]
        if not live:
            return outs
        end = max(position for _, _, position, _ in requests) + max_new_tokens
        capacity = self.bucket(end)
        graph, mask = self._graph(capacity)
        if self.layout is not None:
            self.layout.fit(end)
        tokens = [0] * self.fast.rows
        positions = [self.scratch] * self.fast.rows
        advance = [0] * self.fast.rows
        if mask is not None:
            mask.zero_()
        for row, first, position, _ in requests:
            tokens[row], positions[row], advance[row] = first, position, 1
            if mask is not None:
                mask[row, ..., :position] = True
        self.token.copy_(torch.tensor(tokens))
        self.position.copy_(torch.tensor(positions))
        self.advance.copy_(torch.tensor(advance))
        while live:
            if graph is None:
                with torch.inference_mode():
                    self._step(mask, capacity)
            else:
                graph.replay()
            step = self.next_token.tolist()
            for i in list(live):
                row, _, _, stop = requests[i]
                outs[i].append(step[row])
                if stop(outs[i]) or len(outs[i]) >= max_new_tokens:
                    live.remove(i)
        return outs
