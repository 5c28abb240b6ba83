"""Greedy decoding replayed from CUDA graphs: one graph for every batch of a run, or one per KV-capacity bucket.

Usage: decoder = GraphDecoder(parts, kv)  # fastpath.layers.ModelParts, fastpath.kv.KVBuffer
       outputs = decoder.generate_rows([(row, first_token, position, stop), ...], max_new_tokens)

Why: an eager decode step of an 8B model launches ~1,500 small kernels, and the host takes several times longer
to launch them than the GPU takes to run them (docs/performance.md). A captured step needs no host work: the
graph reads the current token and position from device tensors, writes K/V at that position, computes the next
token with argmax and feeds it back, so each replay is one decode step. Grouped query heads are folded into the
query rows so no K/V is ever expanded.

The step's attention is split-KV: each row's keys are cut into splits that run in parallel and are merged by their
log-sum-exp, each reading only its row's live keys; the splits are re-cut per batch (`SplitLayout.fit`) under a
single graph. It runs on two Triton kernels of our own (kanana_longctx.kernels.decode_triton) where they pass
their check here (`split_mode_works`), else on the memory-efficient kernel's variable-length mode
(kanana_longctx.kernels.split_kv). Where neither does, shapes must be static: attention runs over a fixed
capacity (a few buckets per doubling, >= MIN_BUCKET, at most the buffer, one graph each) and a -inf bias masks
the dead keys, which the kernel still reads. On the CPU (tests) one masked SDPA call over the capacity replaces
the splits. The rest of the step runs on the engine's fused layer halves (fastpath.layers.FusedLayers, on kernels
or compiled on CUDA) with the rows as the tokens of one sequence, where the engine has them.

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
from kanana_longctx.kernels.decode_triton import triton_decode_available, triton_split_attention
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


def split_mode_works(device, mode: str = "varlen", *, dtype=None, groups: int = 4, head_dim: int = 128,
                     splits: int = 2) -> tuple[bool, str]:
    """Whether a live-key split mode gives exact attention here, eagerly and replayed from a CUDA graph captured
    under another cut of the splits: "varlen", the memory-efficient kernel's variable-length mode (a private op:
    its arguments may change between torch releases), or "triton" (kernels.decode_triton, compiled here on first
    use: checked in the run's own dtype, groups, head_dim and split count, so that the check compiles and proves
    the kernel the run then replays). The decoder relies on both reading the cut and the key counts from device
    memory at every replay. With a split that has no live key and freed memory full of junk beforehand, so that an
    output the kernel does not write cannot pass for a right one; float32 must match float64 to rounding, half
    types to their precision."""
    if device.type != "cuda":
        return True, ""
    what = {"varlen": "variable-length split-KV", "triton": "the Triton split-KV kernel"}[mode]
    dtype = dtype or torch.float32
    tolerance = 1e-4 if dtype == torch.float32 else 2e-2
    try:
        gen = torch.Generator(device=device).manual_seed(0)
        rows, hkv, g, d, n = 2, 2, groups, head_dim, 16384
        q, k, v = (torch.randn(rows, hkv, length, d, device=device, generator=gen).to(dtype) for length in (g, n, n))
        live = torch.tensor([1000, 2900], device=device)
        expected = torch.cat([
            reference_attention_with_lse(q[r : r + 1].double(), k[r : r + 1, :, :n].double(), v[r : r + 1, :, :n].double(),
                                         causal=False, scale=0.1)[0]
            for r, n in enumerate(live.tolist())
        ])
        layout = SplitLayout(rows, hkv, g, n, splits, device, min_keys=256)  # cut for the whole buffer

        def attend():
            if mode == "triton":
                return triton_split_attention(q, k, v, live, layout.span, splits=splits, scale=0.1)
            return split_kv_attention_varlen(q, k, v, layout.seqlen_k(live), layout, scale=0.1)

        graph, replayed = capture_graph(attend, warmups=1)
        layout.fit(3000)  # 3000 keys over the splits, row 0's last ones empty: the graph must read the new cut
        for _ in range(4):  # junk in freed blocks of the sizes the kernel allocates
            torch.full((1 << 16,), 1e4, device=device)
        eager = attend()
        graph.replay()
        torch.cuda.synchronize()
        for got in (eager, replayed):
            err = float((got.double() - expected).norm() / expected.norm())
            if not err < tolerance:
                return False, f"{what} differs from float64 attention (rel. error {err:.1e})"
        return True, ""
    except Exception as exc:  # noqa: BLE001 - missing, changed or failing to compile: the next mode runs
        return False, f"{what} unavailable ({type(exc).__name__})"


def varlen_works(device) -> tuple[bool, str]:
    """`split_mode_works` for the memory-efficient kernel's variable-length mode."""
    return split_mode_works(device, "varlen")


class GraphDecoder:
    """Greedy decoding of every row of a KV buffer at once, from CUDA graphs on CUDA (eagerly elsewhere)."""

    def __init__(self, parts: ModelParts, kv: KVBuffer, splits: int | None = None, varlen: bool | None = None,
                 layers=None, triton: bool | None = None):
        """`parts`: the model's modules; `kv`: the buffer it prefilled. `layers`: the engine's
        fastpath.layers.FusedLayers, whose (compiled) halves then run the step's norms, projections, RoPE and MLP
        with the rows as their tokens (None: transformers' modules, layer by layer). `splits`: split-KV parts per
        step (None: chosen from the GPU's SM count; 1 on CPU, where one fused SDPA call over the masked capacity
        runs instead). The step's attention reads live keys only, cut per batch under one graph: on the Triton
        kernels (kernels.decode_triton) where `triton` (None: where they run and pass `split_mode_works`, unless
        `varlen` is given), else on the memory-efficient kernel's variable-length mode where `varlen` (None: where
        it passes its check); otherwise per-capacity graphs with masked splits."""
        self.parts = parts
        self.kv = kv
        self.layers = layers
        self._splits = splits
        dev = kv.device
        rows, dims = kv.rows, parts.dims
        self._sms = torch.cuda.get_device_properties(dev).multi_processor_count if dev.type == "cuda" else 0
        self.triton = bool(triton)  # asked for: no check (the benchmarks, the tests under Triton's interpreter)
        triton_splits = splits or (
            choice.triton_split_count(rows, dims.kv_heads, kv.capacity, self._sms) if self._sms else 1
        )
        notes = []  # why a faster mode was not used, for the run's report
        if triton is None and varlen is None and dev.type == "cuda":
            if triton_decode_available(torch.empty(1, 1, 1, dims.head_dim, dtype=kv.dtype, device=dev)):
                self.triton, note = split_mode_works(dev, "triton", dtype=kv.dtype, groups=dims.groups,
                                                     head_dim=dims.head_dim, splits=triton_splits)
            else:
                note = "the Triton split-KV kernel is not available"
            if not self.triton:
                notes += [note, "decoding on the memory-efficient kernel"]
        if varlen is None:
            varlen = True
            if not self.triton:
                varlen, note = varlen_works(dev)
                if not varlen:
                    notes[-1:] = [note, "the decode step reads whole capacity buckets"]
        self.fallback_note = "; ".join(notes)
        self.varlen = varlen or self.triton
        self.layout = None  # the live-key split layout, when decoding uses one
        if self.triton:
            self.layout = SplitLayout(rows, dims.kv_heads, dims.groups, kv.capacity, triton_splits, dev,
                                      min_keys=choice.TRITON_SPLIT_MIN_KEYS)
        elif self.varlen:
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
        # Clamped: parked rows and the warm-up sit at the scratch position, which may lie beyond a small bucket
        # (their mask is never used for real output, and real positions are always inside the capacity).
        seen = torch.clamp(self.position, max=capacity - 1)
        splits = self.splits(capacity)
        layout = self.layout
        bias = seqlen_k = None
        if layout is not None:  # live keys: [0, position] of live rows, one key of parked ones
            live = torch.where(self.advance > 0, seen + 1, 1)
            if not self.triton:
                seqlen_k = layout.seqlen_k(live)
        else:
            mask[self._row_index, 0, 0, seen] = self._true  # a device tensor: a Python True would be a host copy
            if splits > 1:  # the mask as an additive bias in the split layout, built once for all layers
                bias = mask_bias(mask[:, 0, 0], rows, dims.kv_heads, splits, dims.groups, kv.dtype)

        def attend(i, layer, q, k, v):
            """Write this step's K/V (rows, kv_heads, head_dim) and attend q (rows, kv_heads, groups, head_dim)."""
            attn = layer.self_attn
            k_cache, v_cache = kv.k[i], kv.v[i]
            k_cache[self._row_index, :, self.position] = k
            v_cache[self._row_index, :, self.position] = v
            if self.triton:
                return triton_split_attention(q, k_cache, v_cache, live, layout.span, splits=layout.splits,
                                              scale=attn.scaling)
            if layout is not None:
                return split_kv_attention_varlen(q, k_cache, v_cache, seqlen_k, layout, scale=attn.scaling)
            if splits > 1:
                return split_kv_attention(
                    q, k_cache, v_cache, bias, capacity=capacity, splits=splits, scale=attn.scaling
                )
            return F.scaled_dot_product_attention(
                q, k_cache[:, :, :capacity], v_cache[:, :, :capacity], attn_mask=mask, scale=attn.scaling,
            )

        if self.layers is not None:
            logits = self._fused_layers(attend)
        else:
            logits = self._module_layers(attend)
        self.next_token.copy_(torch.argmax(logits, dim=-1))
        self.token.copy_(self.next_token)
        self.position.add_(self.advance)

    def _module_layers(self, attend) -> torch.Tensor:
        """The step through transformers' modules, the rows as a batch of one-token sequences: logits (rows, V)."""
        parts, dims, rows = self.parts, self.parts.dims, self.kv.rows
        x, cos, sin = parts.embed(self.token[:, None], self.position[:, None])  # x: (rows, 1, hidden)
        for i, layer in enumerate(parts.layers):
            q, k, v = module_qkv(layer, x, cos, sin, dims.heads, dims.kv_heads, dims.head_dim)  # (rows, heads, 1, d)
            o = attend(i, layer, q.reshape(rows, dims.kv_heads, dims.groups, dims.head_dim), k[:, :, 0], v[:, :, 0])
            x = x + layer.self_attn.o_proj(o.reshape(rows, 1, dims.attention_width))
            x = x + layer.mlp(layer.post_attention_layernorm(x))
        return parts.logits(x)[:, -1]

    def _fused_layers(self, attend) -> torch.Tensor:
        """The step through the engine's fused layer halves, the rows as the tokens of one sequence (their own
        positions): the same few fused kernels a prefill runs instead of a dozen small ones per module, which in
        a step that reads little more than the weights and the KV are a large share of the time. Logits (rows, V)."""
        parts, dims, rows, fused = self.parts, self.parts.dims, self.kv.rows, self.layers
        x, cos, sin = parts.embed(self.token[None], self.position[None])  # x: (1, rows, hidden)
        for i, layer in enumerate(parts.layers):
            q, k, v = fused.pre(i, x, cos, sin)  # (1, heads, rows, d)
            q = q[0].transpose(0, 1).reshape(rows, dims.kv_heads, dims.groups, dims.head_dim)
            o = attend(i, layer, q, k[0].transpose(0, 1), v[0].transpose(0, 1))  # (rows, kv_heads, groups, d)
            x = fused.post(i, x, o.reshape(rows, dims.heads, dims.head_dim).transpose(0, 1)[None])
        return parts.logits(x)[0]

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
