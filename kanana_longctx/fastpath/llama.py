"""A lean forward pass over a Llama-family transformers model with one reusable KV buffer.

Usage: fast = PrefixReusingLlama(loaded, max_tokens=L + new, rows=2); logits = fast.prefill(ids, 0, row=0)
       fast.kv.copy_prefix(0, 1, 0, s); fast.prefill_rows([(ids[s:], s, 1)]); fast.decode_rows([...], max_new)

Why a forward of our own: transformers' cache classes and attention interfaces change between releases, and the
NIAH grid needs things they do not offer together: KV written into one preallocated buffer at any position, a
suffix computed against a cached prefix with the split attention (kanana_longctx.kernels.attention), logits for
the last position only, and prefill in chunks so a 128K prompt never materialises 128K x FFN activations. The
weights, norms, MLP and rotary embedding are the model's own modules (fastpath.layers.ModelParts), so numerics
match transformers; tests compare last-token logits with the transformers forward.

The buffer (fastpath.kv.KVBuffer) is shared by all probes: probe p overwrites positions >= its prefix length s_p,
so probes are run in order of decreasing s_p, and every later probe finds its own (shorter) prefix intact. With
`rows` > 1 there are several such buffers (rows of one tensor), so that several probes can be decoded together,
one weight read per step for all of them (`decode_rows`); a row that has not seen a long enough prefix copies it
from another row (`kv.copy_prefix`), which is a memory copy, not a recomputation. Which attention kernel runs,
and on what tiles, is kanana_longctx.kernels.choice's decision; the engine keeps the run's cuDNN plan cache.
"""

from __future__ import annotations

import contextlib
import functools
from dataclasses import dataclass
from itertools import accumulate

import torch

from kanana_longctx.fastpath.decode import GraphDecoder
from kanana_longctx.fastpath.kv import KVBuffer
from kanana_longctx.fastpath.layers import FusedLayers, ModelParts, compile_wanted, module_qkv
from kanana_longctx.kernels import choice, merge
from kanana_longctx.kernels.attention import attend, attend_tiles
from kanana_longctx.plan.memory import buffer_tokens_for, kv_rows_text

# Pre-norm Llama layout with plain residuals. Not granite (embedding/residual/logit multipliers) nor olmo2 (norms
# after attention and MLP): this forward would silently compute something else for them.
SUPPORTED_MODEL_TYPES = ("llama", "mistral", "qwen2", "qwen3")


def supports_fast_path(model) -> tuple[bool, str]:
    """Whether `model` has the Llama-family layout this forward relies on; the reason when it does not."""
    config = model.config
    kind = getattr(config, "model_type", "")
    if kind not in SUPPORTED_MODEL_TYPES:
        return False, f"model type '{kind}' is not in the fast path's list ({', '.join(SUPPORTED_MODEL_TYPES)})"
    if kind != "llama" and getattr(config, "sliding_window", None) and getattr(config, "use_sliding_window", True):
        return False, "sliding-window attention is not supported by the fast path"
    inner = getattr(model, "model", None)
    needed = ("embed_tokens", "layers", "norm", "rotary_emb")
    if inner is None or any(not hasattr(inner, name) for name in needed) or not hasattr(model, "lm_head"):
        return False, "unexpected module layout"
    layer = inner.layers[0]
    for name in ("self_attn", "mlp", "input_layernorm", "post_attention_layernorm"):
        if not hasattr(layer, name):
            return False, f"decoder layer has no {name}"
    return True, ""


@dataclass(frozen=True)
class Segment:
    """One probe's share of a forward: positions [start, start + tokens) of KV buffer row `row`."""

    row: int
    start: int
    tokens: int


class PrefixReusingLlama:
    """Owns the KV buffer, the fused layers and the run's kernel plans; prefills chunks and decodes greedily in
    any of its rows."""

    def __init__(
        self,
        loaded,
        *,
        max_tokens: int,
        chunk_tokens: int = 32768,
        use_graphs: bool = True,
        tile_tokens: int | None = None,
        rows: int = 1,
        fuse_layers: bool = True,
        compile_layers: bool | None = None,
        trim_last_layer: bool = True,
        background_compile: bool | None = None,
        plans: choice.CudnnPlans | None = None,
    ):
        model = loaded.model
        self.parts = ModelParts.of(model)
        self.dims = self.parts.dims
        self.kernel = loaded.attention
        self.plans = plans if plans is not None else choice.CudnnPlans()  # the shapes cuDNN planned in this run
        self.device = next(model.parameters()).device
        self.dtype = next(model.parameters()).dtype
        if tile_tokens is None:
            tile_tokens = choice.tile_tokens(self.kernel, self.device.type)
        self.tile_tokens = max(0, tile_tokens)
        # Chunks end on tile boundaries, so no tile is padded twice; the buffer ends on one, for the last tile.
        self.chunk_tokens = max(1, chunk_tokens)
        if self.tile_tokens:
            self.chunk_tokens = max(self.tile_tokens, self.chunk_tokens - self.chunk_tokens % self.tile_tokens)
        capacity = buffer_tokens_for(max_tokens, self.tile_tokens)
        self.use_graphs = use_graphs
        # The last layer's attention and MLP output feeds nothing but the logits, so it runs only for positions
        # whose logits are wanted; its K/V (from the layer's input) are still written for every position.
        self.trim_last_layer = trim_last_layer
        self._graph_decoder = None
        # Prefill layers as two fused (on CUDA compiled) halves: kanana_longctx.fastpath.layers says why.
        self.fused = None
        if fuse_layers:
            compile_layers = compile_wanted(self.device.type) if compile_layers is None else compile_layers
            self.fused = FusedLayers.for_model(model, compile=compile_layers)
        if background_compile is None:
            background_compile = self.device.type == "cuda"
        if self.fused is not None and background_compile:
            # the merges' Triton kernels compile beside the stream too (the stream itself merges nothing)
            warm = functools.partial(merge.warm_up, self.device, self.dtype, self.dims.head_dim)
            self.fused.compile_in_background(self._example_inputs, warm_ups=[warm])
        self.kv = KVBuffer(self.dims, rows=rows, capacity=capacity, dtype=self.dtype, device=self.device)

    @property
    def rows(self) -> int:
        return self.kv.rows

    @property
    def max_tokens(self) -> int:
        """Positions per row: the buffer's capacity."""
        return self.kv.capacity

    def describe(self) -> str:
        """What this engine runs, for the run's report."""
        parts = [self.fused.describe() if self.fused is not None else "transformers' layer modules"]
        parts.append(f"attention tiles of {self.tile_tokens}" if self.tile_tokens else "exact-shape attention")
        parts.append(kv_rows_text(self.rows))
        if self.trim_last_layer:
            parts.append("last layer for the logits' rows only")
        if self.device.type == "cuda" and self.use_graphs:
            on = " on the fused layers" if self.fused is not None else ""
            parts.append(f"CUDA-graph decode with split-KV attention{on}")
        return ", ".join(parts)

    def _example_inputs(self, tokens: int):
        """(x, cos, sin) of a forward over `tokens` tokens at positions [0, tokens): the compiler's example."""
        ids = torch.zeros(tokens, dtype=torch.long, device=self.device)
        return self.parts.embed(ids[None], torch.arange(tokens, device=self.device)[None])

    def compile_note(self) -> str:
        """How the background compilation went, for the run's report ("" without one)."""
        return self.fused.background_report() if self.fused is not None else ""

    def fallback_notes(self) -> list[str]:
        """What this engine had to fall back from while it ran (compilation, the live-key decode mode), for the
        run's report; empty when it ran as `describe` says."""
        notes = []
        if self.fused is not None and self.fused.background_note:
            notes.append(f"compiling in the background failed ({self.fused.background_note}); compiled on first use")
        if self.fused is not None and self.fused.compile_error:
            notes.append(self.fused.describe())
        decoder = self._graph_decoder
        if decoder is not None and decoder.fallback_note:
            notes.append(decoder.fallback_note)
        return notes

    @torch.inference_mode()
    def prefill(self, ids, start: int, row: int = 0, want_logits: bool = True) -> torch.Tensor | None:
        """Compute positions [start, start + len(ids)) in buffer row `row`; return float32 logits of the last one
        (None without `want_logits`: a part that only later tokens attend to)."""
        ids = self._to_device(ids)
        if start + ids.numel() > self.max_tokens:
            raise ValueError(f"{start + ids.numel()} tokens exceed the KV buffer of {self.max_tokens}")
        logits = None
        end = start + ids.numel()
        c0 = start
        while c0 < end:  # chunk boundaries on multiples of chunk_tokens, in absolute positions
            c1 = min(end, c0 + self.chunk_tokens - c0 % self.chunk_tokens)
            logits = self._forward(ids[c0 - start : c1 - start], c0, want_logits=want_logits and c1 == end, row=row)
            c0 = c1
        return logits

    @torch.inference_mode()
    def prefill_stream(self, ids, start: int, row: int = 0) -> None:
        """Like `prefill` without logits, on the eager layer halves: the haystack stream, computed once per run
        before any probe, keeps the GPU busy while the kernel or compiled halves are built in the background
        (FusedLayers.compile_in_background). Always eager, whether or not the compilation has finished, so that
        a run's numbers never depend on the compiler's speed."""
        with self.fused.eager() if self.fused is not None else contextlib.nullcontext():
            self.prefill(ids, start, row=row, want_logits=False)

    @torch.inference_mode()
    def prefill_rows(self, requests) -> list[torch.Tensor]:
        """Prefill several probes, each in its own buffer row: `requests` holds (ids, start, row) with distinct
        rows; returns each one's last-position logits, in order.

        Why: a short suffix alone is mostly fixed cost on a GPU (a 256-token suffix over 8K cached tokens is
        mostly weight reads and launches: docs/performance.md): every layer reads all its weights and launches
        the same kernels whatever the token count. Suffixes that fit in one chunk together share one forward: their
        projections and MLPs run as one matmul over all their tokens, their attention per probe against its own
        row. Longer ones run alone, in chunks, as `prefill` does."""
        logits: list[torch.Tensor | None] = [None] * len(requests)
        if len({row for _, _, row in requests}) != len(requests):
            raise ValueError("each request of prefill_rows needs its own buffer row")
        group: list[int] = []
        group_tokens = 0

        def flush():
            if group:
                ids = self._to_device(torch.cat([torch.as_tensor(requests[j][0], dtype=torch.long) for j in group]))
                segments = [Segment(requests[j][2], requests[j][1], len(requests[j][0])) for j in group]
                for j, out in zip(group, self._forward_segments(ids, segments, want_logits=True)):
                    logits[j] = out
            group.clear()

        for j, (ids, start, row) in enumerate(requests):
            n = len(ids)
            if start + n > self.max_tokens:
                raise ValueError(f"{start + n} tokens exceed the KV buffer of {self.max_tokens}")
            if n > self.chunk_tokens or n == 0:
                logits[j] = self.prefill(ids, start, row=row)
                continue
            if group_tokens + n > self.chunk_tokens:
                flush()
                group_tokens = 0
            group.append(j)
            group_tokens += n
        flush()
        return logits

    @torch.inference_mode()
    def decode_rows(self, requests, max_new_tokens: int) -> list[list[int]]:
        """Greedy decoding of several probes at once: `requests` holds (row, first_logits, position, stop) with
        distinct rows; the prompt of a row ends at `position - 1`, and `stop(token_ids) -> bool` ends its
        generation early (EOS, newline for retform). On CUDA all rows step together in one CUDA graph replay
        (kanana_longctx.fastpath.decode); elsewhere each row runs eagerly."""
        if self.device.type == "cuda" and self.use_graphs:
            if self.fused is not None:
                self.fused.finish_background_compile()  # no other thread's kernels inside a graph capture
            if self._graph_decoder is None:
                self._graph_decoder = GraphDecoder(self.parts, self.kv, layers=self.fused)
            firsts = torch.stack([logits for _, logits, _, _ in requests]).argmax(-1).tolist()
            rows = [(row, first, position, stop) for (row, _, position, stop), first in zip(requests, firsts)]
            return self._graph_decoder.generate_rows(rows, max_new_tokens)
        return [self._decode_eager(*request, max_new_tokens) for request in requests]

    def _decode_eager(self, row: int, first_logits, position: int, stop, max_new_tokens: int) -> list[int]:
        out: list[int] = []
        logits = first_logits
        for step in range(max_new_tokens):
            token = int(torch.argmax(logits).item())
            out.append(token)
            if stop(out) or step == max_new_tokens - 1 or position + 1 > self.max_tokens:
                break
            logits = self._forward(torch.tensor([token], device=self.device), position, want_logits=True, row=row)
            position += 1
        return out

    def _to_device(self, values) -> torch.Tensor:
        """Token ids or indices as a long tensor on the engine's device, copied without waiting for the GPU.

        Why: a plain copy from pageable host memory waits until the GPU has run everything queued before it, so
        every forward began with the GPU drained and the host launching its first kernels while it idled; from
        pinned memory the copy is queued like a kernel (the pinned block is kept until the copy has run)."""
        if isinstance(values, torch.Tensor) and values.device == self.device:
            return values.long()
        values = torch.as_tensor(values, dtype=torch.long)
        if self.device.type != "cuda" or values.device.type != "cpu":
            return values.to(self.device)
        return values.pin_memory().to(self.device, non_blocking=True)

    def _forward(self, ids: torch.Tensor, start: int, *, want_logits: bool, row: int = 0):
        out = self._forward_segments(ids, (Segment(row, start, ids.numel()),), want_logits=want_logits)
        return None if out is None else out[0]

    def _forward_segments(self, ids: torch.Tensor, segments, *, want_logits: bool):
        """One forward over the concatenated tokens of `segments` (distinct rows); the last-position logits of
        each segment when `want_logits`, else None."""
        positions = torch.cat([torch.arange(s.start, s.start + s.tokens, device=self.device) for s in segments])
        x, cos, sin = self.parts.embed(ids[None], positions[None])
        ends = list(accumulate(s.tokens for s in segments))  # each segment's end in the concatenated tokens
        offsets = [end - s.tokens for s, end in zip(segments, ends)]
        last_rows = self._to_device([end - 1 for end in ends])  # an index list would be a waiting host copy
        layers = self.parts.layers
        for i, layer in enumerate(layers):
            trim = self.trim_last_layer and i == len(layers) - 1
            q, k, v = self._qkv(i, layer, x, cos, sin)
            outs = []
            for s, offset in zip(segments, offsets):
                k_buf, v_buf = self.kv.row(i, s.row)
                end = s.start + s.tokens
                k_buf[:, :, s.start : end] = k[:, :, offset : offset + s.tokens]
                v_buf[:, :, s.start : end] = v[:, :, offset : offset + s.tokens]
                if trim and not want_logits:
                    continue  # nothing reads this layer's output: its K/V were all that was needed
                skip = s.tokens - 1 if trim else 0  # the trimmed layer: the segment's last query only
                q_seg = q[:, :, offset + skip : offset + s.tokens]
                outs.append(self._attention(q_seg, k_buf, v_buf, s.start + skip, layer))
            if not outs:
                return None
            # Joined along the tokens of the (1, T, heads, head_dim) layout the attention returns its views of.
            o = outs[0] if len(outs) == 1 else torch.cat([o.transpose(1, 2) for o in outs], dim=1).transpose(1, 2)
            if trim:
                x = x[:, last_rows]
            x = self._finish_layer(i, layer, x, o)
        if not want_logits:
            return None
        if not self.trim_last_layer:
            x = x[:, last_rows]
        return list(self.parts.logits(x).float()[0].unbind(0))

    def _qkv(self, i: int, layer, x, cos, sin):
        """Norm, projections and RoPE of layer i: q, k, v as (1, heads, T, head_dim)."""
        if self.fused is not None:
            return self.fused.pre(i, x, cos, sin)
        dims = self.dims
        return module_qkv(layer, x, cos, sin, dims.heads, dims.kv_heads, dims.head_dim)

    def _attention(self, q, k_buf, v_buf, q_start: int, layer):
        """Queries at [q_start, q_start + T) over the row's keys up to their end, already written."""
        scale = layer.self_attn.scaling
        if self.tile_tokens:
            return attend_tiles(
                q, k_buf, v_buf, q_start=q_start, tile=self.tile_tokens, kernel=self.kernel, scale=scale,
                plans=self.plans,
            )
        end = q_start + q.shape[2]
        return attend(
            q, k_buf[:, :, :end], v_buf[:, :, :end], q_start=q_start, kernel=self.kernel, scale=scale, plans=self.plans
        )

    def _finish_layer(self, i: int, layer, x, o):
        """o_proj, residual and MLP of layer i. o: (1, heads, T, head_dim)."""
        if self.fused is not None:
            return self.fused.post(i, x, o)
        T = x.shape[1]
        x = x + layer.self_attn.o_proj(o.transpose(1, 2).reshape(1, T, self.dims.attention_width))
        return x + layer.mlp(layer.post_attention_layernorm(x))
