"""A lean forward pass over a Llama-family transformers model with one reusable KV buffer.

Usage: fast = PrefixReusingLlama(loaded, max_tokens=L + new); fast.prefill(ids, start=s); fast.decode(...)

Why a forward of our own: transformers' cache classes and attention interfaces change between releases, and the
NIAH grid needs things they do not offer together: KV written into one preallocated buffer at any position, a
suffix computed against a cached prefix with the split cuDNN attention (kanana_longctx.kernels.attention), logits for
the last position only, and prefill in chunks so a 128K prompt never materialises 128K x FFN activations. The
weights, norms, MLP and rotary embedding are the model's own modules, so numerics match transformers; tests compare
last-token logits with the transformers forward.

The buffer is shared by all probes: probe p overwrites positions >= its prefix length s_p, so probes are run in
order of decreasing s_p, and every later probe finds its own (shorter) prefix intact. With `rows` > 1 there are
several such buffers (rows of one tensor), so that several probes can be decoded together, one weight read per
step for all of them (`decode_rows`); a row that has not seen a long enough prefix copies it from another row
(`copy_prefix`), which is a memory copy, not a recomputation.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from itertools import accumulate

import torch

from kanana_longctx.fastpath.layers import FusedLayers, compile_wanted, rotate_half
from kanana_longctx.plan.memory import kv_rows_text

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


# Tile of the fixed-shape attention (kanana_longctx.kernels.attention.attend_tiles). Only cuDNN needs it (a plan per
# shape); FA2 and the CPU kernels take any shape for free, so there the exact split path is cheaper.
# 1024: from 1024 up the rectangle runs at 617-683 TFLOP/s on the H100 (bench/tiles.py), a plan costs ~60 ms
# (128 of them for a whole 128K grid), and padding costs ~one tile of attention rows per probe: smallest wins.
CUDNN_TILE_TOKENS = 1024


def default_tile_tokens(kernel: str, device_type: str) -> int:
    return CUDNN_TILE_TOKENS if kernel == "cudnn" and device_type == "cuda" else 0


def buffer_tokens_for(tokens: int, tile: int) -> int:
    """The KV buffer's length for `tokens` positions: up to the end of the last tile (attend_tiles reads whole
    tiles), `tokens` itself without tiles."""
    return tokens + (-tokens % tile) if tile else tokens


def row_kv_bytes(config, tokens: int, element_size: int = 2) -> int:
    """Bytes of one buffer row: K and V for every layer over `tokens` positions."""
    heads = config.num_attention_heads
    kv = getattr(config, "num_key_value_heads", None) or heads
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // heads
    return 2 * config.num_hidden_layers * kv * tokens * head_dim * element_size


def module_qkv(layer, x, cos, sin, n_heads: int, n_kv: int, head_dim: int):
    """Layer input norm, q/k/v projections, Qwen3-style per-head norms (before RoPE) and RoPE, through
    transformers' own modules. x: (B, T, hidden); returns q, k, v as (B, heads, T, head_dim)."""
    attn = layer.self_attn
    B, T = x.shape[:2]
    h = layer.input_layernorm(x)
    q = attn.q_proj(h).view(B, T, n_heads, head_dim)
    k = attn.k_proj(h).view(B, T, n_kv, head_dim)
    v = attn.v_proj(h).view(B, T, n_kv, head_dim).transpose(1, 2)
    if hasattr(attn, "q_norm"):
        q, k = attn.q_norm(q), attn.k_norm(k)
    q, k = q.transpose(1, 2), k.transpose(1, 2)
    q = q * cos + rotate_half(q) * sin
    k = k * cos + rotate_half(k) * sin
    return q, k, v


@dataclass(frozen=True)
class Segment:
    """One probe's share of a forward: positions [start, start + tokens) of KV buffer row `row`."""

    row: int
    start: int
    tokens: int


class PrefixReusingLlama:
    """Owns the KV buffer; runs prefill chunks and greedy decoding for one sequence at a time."""

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
    ):
        from kanana_longctx.kernels.attention import attend, attend_tiles

        self._attend = attend
        self._attend_tiles = attend_tiles
        self.loaded = loaded
        model = loaded.model
        self.inner = model.model
        self.lm_head = model.lm_head
        self.layers = list(self.inner.layers)
        cfg = model.config
        self.n_heads = cfg.num_attention_heads
        self.n_kv = getattr(cfg, "num_key_value_heads", None) or self.n_heads
        self.head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // self.n_heads
        self.kernel = loaded.attention
        self.device = next(model.parameters()).device
        self.dtype = next(model.parameters()).dtype
        if tile_tokens is None:
            tile_tokens = default_tile_tokens(self.kernel, self.device.type)
        self.tile_tokens = max(0, tile_tokens)
        # Chunks end on tile boundaries, so no tile is padded twice; the buffer ends on one, for the last tile.
        self.chunk_tokens = max(1, chunk_tokens)
        if self.tile_tokens:
            self.chunk_tokens = max(self.tile_tokens, self.chunk_tokens - self.chunk_tokens % self.tile_tokens)
        self.max_tokens = buffer_tokens_for(max_tokens, self.tile_tokens)
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
            self.fused.compile_in_background(self._example_inputs)
        self.rows = max(1, rows)
        shape = (self.rows, self.n_kv, self.max_tokens, self.head_dim)
        # Zeros, not empty: the static decode step attends over a whole capacity bucket with a mask, and a masked
        # position that holds NaN garbage still poisons the result (0 x NaN = NaN in softmax(QK) V).
        self.k_cache = [torch.zeros(shape, dtype=self.dtype, device=self.device) for _ in self.layers]
        self.v_cache = [torch.zeros(shape, dtype=self.dtype, device=self.device) for _ in self.layers]

    def describe(self) -> str:
        """What this engine runs, for the run's report."""
        parts = [self.fused.describe() if self.fused is not None else "transformers' layer modules"]
        parts.append(f"attention tiles of {self.tile_tokens}" if self.tile_tokens else "exact-shape attention")
        parts.append(kv_rows_text(self.rows))
        if self.trim_last_layer:
            parts.append("last layer for the logits' rows only")
        if self.device.type == "cuda" and self.use_graphs:
            parts.append("CUDA-graph decode with split-KV attention")
        return ", ".join(parts)

    def _example_inputs(self, tokens: int):
        """(x, cos, sin) of a forward over `tokens` tokens at positions [0, tokens): the compiler's example."""
        ids = torch.zeros(tokens, dtype=torch.long, device=self.device)
        return self._embed(ids, torch.arange(tokens, device=self.device))

    def _embed(self, ids: torch.Tensor, positions: torch.Tensor):
        """Token embeddings (1, T, hidden) and the rotary cos, sin (1, 1, T, head_dim) of their positions."""
        x = self.inner.embed_tokens(ids[None])
        cos, sin = self.inner.rotary_emb(x, positions[None])
        return x, cos.unsqueeze(1), sin.unsqueeze(1)

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
        if decoder is not None and decoder.varlen_note:
            notes.append(f"{decoder.varlen_note}; the decode step reads whole capacity buckets")
        return notes

    @property
    def kv_bytes(self) -> int:
        """Bytes of all KV buffers (every row)."""
        return self.rows * row_kv_bytes(self.loaded.model.config, self.max_tokens, self.k_cache[0].element_size())

    @torch.inference_mode()
    def copy_prefix(self, src: int, dst: int, begin: int, end: int) -> None:
        """Copy the KV of positions [begin, end) from row `src` to row `dst`."""
        for cache in self.k_cache + self.v_cache:
            cache[dst, :, begin:end] = cache[src, :, begin:end]

    @torch.inference_mode()
    def prefill(self, ids, start: int, row: int = 0, want_logits: bool = True) -> torch.Tensor | None:
        """Compute positions [start, start + len(ids)) in buffer row `row`; return float32 logits of the last one
        (None without `want_logits`: a part that only later tokens attend to)."""
        ids = torch.as_tensor(ids, dtype=torch.long, device=self.device)
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
        before any probe, keeps the GPU busy while the compiled halves are built in the background
        (FusedLayers.compile_in_background). Always eager, whether or not the compilation has finished, so that
        a run's numbers never depend on the compiler's speed."""
        with self.fused.eager() if self.fused is not None else contextlib.nullcontext():
            self.prefill(ids, start, row=row, want_logits=False)

    @torch.inference_mode()
    def prefill_rows(self, requests) -> list[torch.Tensor]:
        """Prefill several probes, each in its own buffer row: `requests` holds (ids, start, row) with distinct
        rows; returns each one's last-position logits, in order.

        Why: a short suffix alone is mostly fixed cost on a GPU (a 256-token suffix over 8K cached tokens takes
        ~40 ms on the H100, a sixth of it arithmetic): every layer reads all its weights and launches the same
        kernels whatever the token count. Suffixes that fit in one chunk together share one forward: their
        projections and MLPs run as one matmul over all their tokens, their attention per probe against its own
        row. Longer ones run alone, in chunks, as `prefill` does."""
        logits: list[torch.Tensor | None] = [None] * len(requests)
        if len({row for _, _, row in requests}) != len(requests):
            raise ValueError("each request of prefill_rows needs its own buffer row")
        group: list[int] = []
        group_tokens = 0

        def flush():
            if group:
                ids = torch.cat([torch.as_tensor(requests[j][0], dtype=torch.long) for j in group]).to(self.device)
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
    def decode(self, first_logits: torch.Tensor, position: int, max_new_tokens: int, stop, row: int = 0) -> list[int]:
        """Greedy decoding from `first_logits` (the prompt's last position is `position - 1`) in buffer row `row`.
        `stop(token_ids) -> bool` ends generation early (EOS, newline for retform). On CUDA the steps are replayed
        from CUDA graphs (kanana_longctx.fastpath.decode); elsewhere they run eagerly."""
        return self.decode_rows([(row, first_logits, position, stop)], max_new_tokens)[0]

    @torch.inference_mode()
    def decode_rows(self, requests, max_new_tokens: int) -> list[list[int]]:
        """Greedy decoding of several probes at once: `requests` holds (row, first_logits, position, stop) with
        distinct rows. On CUDA all rows step together in one CUDA graph replay; elsewhere each row runs eagerly."""
        if self.device.type == "cuda" and self.use_graphs:
            if self.fused is not None:
                self.fused.finish_background_compile()  # no other thread's kernels inside a graph capture
            if self._graph_decoder is None:
                from kanana_longctx.fastpath.decode import GraphDecoder

                self._graph_decoder = GraphDecoder(self)
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

    def _forward(self, ids: torch.Tensor, start: int, *, want_logits: bool, row: int = 0):
        out = self._forward_segments(ids, (Segment(row, start, ids.numel()),), want_logits=want_logits)
        return None if out is None else out[0]

    def _forward_segments(self, ids: torch.Tensor, segments, *, want_logits: bool):
        """One forward over the concatenated tokens of `segments` (distinct rows); the last-position logits of
        each segment when `want_logits`, else None."""
        positions = torch.cat([torch.arange(s.start, s.start + s.tokens, device=self.device) for s in segments])
        x, cos, sin = self._embed(ids, positions)
        ends = list(accumulate(s.tokens for s in segments))  # each segment's end in the concatenated tokens
        offsets = [end - s.tokens for s, end in zip(segments, ends)]
        last_rows = [end - 1 for end in ends]
        for i, layer in enumerate(self.layers):
            trim = self.trim_last_layer and i == len(self.layers) - 1
            q, k, v = self._qkv(i, layer, x, cos, sin)
            outs = []
            for s, offset in zip(segments, offsets):
                k_buf, v_buf = self.k_cache[i][s.row : s.row + 1], self.v_cache[i][s.row : s.row + 1]
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
        return list(self.lm_head(self.inner.norm(x)).float()[0].unbind(0))

    def _qkv(self, i: int, layer, x, cos, sin):
        """Norm, projections and RoPE of layer i: q, k, v as (1, heads, T, head_dim)."""
        if self.fused is not None:
            return self.fused.pre(i, x, cos, sin)
        return module_qkv(layer, x, cos, sin, self.n_heads, self.n_kv, self.head_dim)

    def _attention(self, q, k_buf, v_buf, q_start: int, layer):
        """Queries at [q_start, q_start + T) over the row's keys up to their end, already written."""
        scale = layer.self_attn.scaling
        if self.tile_tokens:
            return self._attend_tiles(q, k_buf, v_buf, q_start=q_start, tile=self.tile_tokens, kernel=self.kernel, scale=scale)
        end = q_start + q.shape[2]
        return self._attend(q, k_buf[:, :, :end], v_buf[:, :, :end], q_start=q_start, kernel=self.kernel, scale=scale)

    def _finish_layer(self, i: int, layer, x, o):
        """o_proj, residual and MLP of layer i. o: (1, heads, T, head_dim)."""
        if self.fused is not None:
            return self.fused.post(i, x, o)
        T = x.shape[1]
        x = x + layer.self_attn.o_proj(o.transpose(1, 2).reshape(1, T, self.n_heads * self.head_dim))
        return x + layer.mlp(layer.post_attention_layernorm(x))
