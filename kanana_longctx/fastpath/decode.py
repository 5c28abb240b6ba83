"""Greedy decoding replayed from CUDA graphs: one graph for every batch of a run, or one per KV-capacity bucket.

Usage: decoder = GraphDecoder(parts, kv)  # fastpath.layers.ModelParts, fastpath.kv.KVBuffer
       outputs = decoder.generate_rows([(row, first_token, position, stop), ...], max_new_tokens)

Why: an eager decode step of an 8B model launches ~1,500 small kernels, and the host takes several times longer
to launch them than the GPU takes to run them (docs/performance.md). A captured step needs no host work: the
graph reads the current token and position from device tensors, writes K/V at that position, computes the next
token with argmax and feeds it back, so each replay is one decode step. Grouped query heads are folded into the
query rows so no K/V is ever expanded.

The step's attention is split-KV (kanana_longctx.kernels.split_kv): each row's keys are cut into splits that run
in parallel and are merged by their log-sum-exp, each told how many of its keys are live, so a row reads only its
own prompt; the splits are re-cut per batch (`SplitLayout.fit`) under a single graph. Where that variable-length
mode is missing or fails its check here (`varlen_works`), shapes must be static: attention runs over a fixed
capacity (a few buckets per doubling, >= MIN_BUCKET, at most the buffer, one graph each) and a -inf bias masks
the dead keys, which the kernel still reads. On the CPU (tests) one masked SDPA call over the capacity replaces
the splits.

Every row of the KV buffer steps at once (one weight read per step for all of them: decoding is memory-bound, so
a batch of probes costs little more than one). Rows without a probe are parked on a scratch position past every
live one and do not advance.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from kanana_longctx.fastpath.kv import KVBuffer
from kanana_longctx.fastpath.layers import ModelParts, module_qkv
from kanana_longctx.kernels import choice
from kanana_longctx.kernels.attention import reference_attention_with_lse
from kanana_longctx.kernels.split_kv import SplitLayout, mask_bias, split_kv_attention, split_kv_attention_varlen

MIN_BUCKET = 4096


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


class GraphDecoder:
    """Greedy decoding of every row of a KV buffer at once, from CUDA graphs on CUDA (eagerly elsewhere)."""

    def __init__(self, parts: ModelParts, kv: KVBuffer, splits: int | None = None, varlen: bool | None = None):
        """`parts`: the model's modules; `kv`: the buffer it prefilled. `splits`: split-KV parts per step (None:
        chosen from the GPU's SM count; 1 on CPU, where one fused SDPA call over the masked capacity runs
        instead). `varlen`: splits read only their live keys, cut per batch under one graph (None: where
        `varlen_works`); else per-capacity graphs with masked splits."""
        self.parts = parts
        self.kv = kv
        self._splits = splits
        self.varlen_note = ""
        dev = kv.device
        if varlen is None:
            varlen, self.varlen_note = varlen_works(dev)
        self.varlen = varlen
        self._sms = torch.cuda.get_device_properties(dev).multi_processor_count if dev.type == "cuda" else 0
        rows, dims = kv.rows, parts.dims
        self.layout = None  # the variable-length split layout, when decoding uses it
        if varlen:
            if splits is not None:
                count = splits
            else:
                count = choice.live_split_count(rows, dims.kv_heads, kv.capacity, self._sms) if self._sms else 1
            if count > 1:
                self.layout = SplitLayout(rows, dims.kv_heads, dims.groups, kv.capacity, count, dev)
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
            return self.kv.capacity
        step = MIN_BUCKET
        while step * 8 <= end:
            step *= 2
        return min(-(-end // step) * step, self.kv.capacity)

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
        return choice.choose_splits(self.kv.rows, self.parts.dims.kv_heads, capacity, self._sms)

    @property
    def scratch(self) -> int:
        """A position no probe uses (the buffer holds the longest probe plus its new tokens plus one)."""
        return self.kv.capacity - 1

    def _step(self, mask: torch.Tensor | None, capacity: int) -> None:
        """One decode step of every row on device tensors only (what the graph records). `mask`: the live keys of
        the masked attention (None with the variable-length layout, which counts them instead)."""
        parts, kv, dims = self.parts, self.kv, self.parts.dims
        rows = kv.rows
        x, cos, sin = parts.embed(self.token[:, None], self.position[:, None])  # x: (rows, 1, hidden)
        # Clamped: parked rows and the warm-up sit at the scratch position, which may lie beyond a small bucket
        # (their mask is never used for real output, and real positions are always inside the capacity).
        seen = torch.clamp(self.position, max=capacity - 1)
        groups = dims.groups
        splits = self.splits(capacity)
        layout = self.layout
        if layout is not None:  # live keys per split: [0, position] of live rows, one key of parked ones
            seqlen_k = layout.seqlen_k(torch.where(self.advance > 0, seen + 1, 1))
        else:
            mask[self._row_index, 0, 0, seen] = self._true  # a device tensor: a Python True would be a host copy
            if splits > 1:  # the mask as an additive bias in the split layout, built once for all layers
                bias = mask_bias(mask[:, 0, 0], rows, dims.kv_heads, splits, groups, x.dtype)
        for i, layer in enumerate(parts.layers):
            attn = layer.self_attn
            q, k, v = module_qkv(layer, x, cos, sin, dims.heads, dims.kv_heads, dims.head_dim)  # (rows, heads, 1, d)
            k_cache, v_cache = kv.k[i], kv.v[i]
            k_cache[self._row_index, :, self.position] = k[:, :, 0]
            v_cache[self._row_index, :, self.position] = v[:, :, 0]
            qf = q.reshape(rows, dims.kv_heads, groups, dims.head_dim)
            if layout is not None:
                o = split_kv_attention_varlen(qf, k_cache, v_cache, seqlen_k, layout, scale=attn.scaling)
            elif splits > 1:
                o = split_kv_attention(qf, k_cache, v_cache, bias, capacity=capacity, splits=splits, scale=attn.scaling)
            else:
                o = F.scaled_dot_product_attention(
                    qf, k_cache[:, :, :capacity], v_cache[:, :, :capacity], attn_mask=mask, scale=attn.scaling,
                )
            x = x + attn.o_proj(o.reshape(rows, 1, dims.attention_width))
            x = x + layer.mlp(layer.post_attention_layernorm(x))
        logits = parts.logits(x)[:, -1]
        self.next_token.copy_(torch.argmax(logits, dim=-1))
        self.token.copy_(self.next_token)
        self.position.add_(self.advance)

    def _graph(self, capacity: int):
        if capacity in self._graphs:
            return self._graphs[capacity]
        mask = None
        if self.layout is None:
            mask = torch.zeros(self.kv.rows, 1, 1, capacity, dtype=torch.bool, device=self.kv.device)
        self.captures += 1
        # Warm-up and capture write K/V at the scratch position, never over a live prefix.
        if self.kv.device.type != "cuda":  # no graphs off CUDA: the static step runs eagerly (tests)
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
        tokens = [0] * self.kv.rows
        positions = [self.scratch] * self.kv.rows
        advance = [0] * self.kv.rows
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
