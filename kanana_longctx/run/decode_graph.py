"""Greedy decoding replayed from CUDA graphs, one graph per KV-capacity bucket.

Usage: tokens = GraphDecoder(fast).generate(first_token, position, max_new_tokens, stop)

Why: an eager decode step of an 8B model launches ~1,500 small kernels; on the H100 host that is ~35-50 ms of CPU
time for ~6 ms of GPU work (measured, bench/kernels.py). A captured step needs no host work: the graph reads the
current token and position from device tensors, writes K/V at that position, unmasks it, computes the next token
with argmax and feeds it back, so each replay is one decode step. Shapes must be static, so attention runs over a
fixed capacity (a few buckets per doubling, >= 4096, at most the buffer) with a boolean mask of the live positions; grouped
query heads are folded into the query rows so no K/V is ever expanded.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

MIN_BUCKET = 4096


class GraphDecoder:
    def __init__(self, fast):
        self.fast = fast
        dev = fast.device
        self.token = torch.zeros(1, dtype=torch.long, device=dev)
        self.position = torch.zeros(1, dtype=torch.long, device=dev)
        self.next_token = torch.zeros(1, dtype=torch.long, device=dev)
        self._graphs: dict[int, tuple[torch.cuda.CUDAGraph, torch.Tensor]] = {}

    def bucket(self, end: int) -> int:
        """The capacity for a sequence ending at `end`: a multiple of a quarter of the power of two below it
        (>= MIN_BUCKET), so a step reads at most ~25% more KV than it needs, with ~4 graphs per doubling."""
        step = MIN_BUCKET
        while step * 8 <= end:
            step *= 2
        return min(-(-end // step) * step, self.fast.max_tokens)

    def _step(self, mask: torch.Tensor, capacity: int) -> None:
        """One decode step on device tensors only (what the graph records)."""
        fast = self.fast
        inner = fast.inner
        x = inner.embed_tokens(self.token[None])  # (1, 1, hidden)
        cos, sin = inner.rotary_emb(x, self.position[None])
        cos, sin = cos.unsqueeze(1), sin.unsqueeze(1)
        # Clamped: warm-up and capture run at a scratch position beyond a small bucket's capacity (the mask is
        # reset before real use, and real positions are always inside the capacity).
        mask.index_fill_(3, torch.clamp(self.position, max=capacity - 1), True)
        groups = fast.n_heads // fast.n_kv
        from kanana_longctx.run.fast_llama import _rotate_half

        for i, layer in enumerate(fast.layers):
            attn = layer.self_attn
            h = layer.input_layernorm(x)
            q = attn.q_proj(h).view(1, 1, fast.n_heads, fast.head_dim)
            k = attn.k_proj(h).view(1, 1, fast.n_kv, fast.head_dim)
            v = attn.v_proj(h).view(1, 1, fast.n_kv, fast.head_dim).transpose(1, 2)
            if hasattr(attn, "q_norm"):
                q, k = attn.q_norm(q), attn.k_norm(k)
            q, k = q.transpose(1, 2), k.transpose(1, 2)
            q = q * cos + _rotate_half(q) * sin
            k = k * cos + _rotate_half(k) * sin
            fast.k_cache[i].index_copy_(2, self.position, k)
            fast.v_cache[i].index_copy_(2, self.position, v)
            qf = q.reshape(1, fast.n_kv, groups, fast.head_dim)
            o = F.scaled_dot_product_attention(
                qf, fast.k_cache[i][:, :, :capacity], fast.v_cache[i][:, :, :capacity], attn_mask=mask, scale=attn.scaling
            )
            x = x + attn.o_proj(o.reshape(1, 1, fast.n_heads * fast.head_dim))
            x = x + layer.mlp(layer.post_attention_layernorm(x))
        logits = fast.lm_head(inner.norm(x))[0, -1]
        self.next_token.copy_(torch.argmax(logits).view(1))
        self.token.copy_(self.next_token)
        self.position.add_(1)

    def _graph(self, capacity: int):
        if capacity in self._graphs:
            return self._graphs[capacity]
        mask = torch.zeros(1, 1, 1, capacity, dtype=torch.bool, device=self.fast.device)
        scratch = self.fast.max_tokens - 1  # warm-up and capture write K/V here, never over a live prefix
        if self.fast.device.type != "cuda":  # no graphs off CUDA: the static step runs eagerly (tests)
            with torch.inference_mode():
                self.position.fill_(scratch)
                self._step(mask, capacity)
            self._graphs[capacity] = (None, mask)
            return None, mask
        stream = torch.cuda.Stream()
        stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(stream), torch.inference_mode():
            for _ in range(2):
                self.position.fill_(scratch)
                self._step(mask, capacity)
        torch.cuda.current_stream().wait_stream(stream)
        graph = torch.cuda.CUDAGraph()
        self.position.fill_(scratch)
        with torch.inference_mode(), torch.cuda.graph(graph):
            self._step(mask, capacity)
        self._graphs[capacity] = (graph, mask)
        return graph, mask

    def generate(self, first_token: int, position: int, max_new_tokens: int, stop) -> list[int]:
        """Tokens after `first_token` (already chosen from the prefill logits) until stop or max_new_tokens."""
        out = [first_token]
        if stop(out) or max_new_tokens <= 1:
            return out
        capacity = self.bucket(position + max_new_tokens)
        graph, mask = self._graph(capacity)
        mask.zero_()
        mask[..., :position] = True
        self.token.fill_(first_token)
        self.position.fill_(position)
        while len(out) < max_new_tokens:
            if graph is None:
                with torch.inference_mode():
                    self._step(mask, capacity)
            else:
                graph.replay()
            out.append(int(self.next_token.item()))
            if stop(out):
                break
        return out
