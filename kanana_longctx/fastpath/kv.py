"""The fast engine's KV state: K and V of every layer for `rows` sequences of up to `capacity` positions (torch).

Usage: kv = KVBuffer(dims, rows=2, capacity=buffer_tokens_for(tokens, tile), dtype=..., device=...)
       kv.k[layer][row, :, begin:end] = ...; kv.copy_prefix(src=0, dst=1, begin=0, end=s)

One owner for the buffers that prefill writes, decoding reads and writes, and the plan copies between rows: the
prefill (fastpath.llama) and the graph decoder (fastpath.decode) both take this object instead of reaching into
each other. The tensors are (rows, kv_heads, capacity, head_dim) per layer, preallocated once for a run.
"""

from __future__ import annotations

import torch

from kanana_longctx.plan.dims import ModelDims
from kanana_longctx.plan.memory import row_kv_bytes


class KVBuffer:
    def __init__(self, dims: ModelDims, *, rows: int, capacity: int, dtype: torch.dtype, device: torch.device):
        self.rows = max(1, rows)
        self.capacity = capacity
        self.kv_heads = dims.kv_heads
        self.head_dim = dims.head_dim
        self.device = device
        self.dtype = dtype
        shape = (self.rows, dims.kv_heads, capacity, dims.head_dim)
        # Zeros, not empty: the static decode step attends over a whole capacity bucket with a mask, and a masked
        # position that holds NaN garbage still poisons the result (0 x NaN = NaN in softmax(QK) V).
        self.k = [torch.zeros(shape, dtype=dtype, device=device) for _ in range(dims.layers)]
        self.v = [torch.zeros(shape, dtype=dtype, device=device) for _ in range(dims.layers)]
        self._dims = dims

    @property
    def nbytes(self) -> int:
        """Bytes of every row of every layer."""
        return self.rows * row_kv_bytes(self._dims, self.capacity, self.k[0].element_size())

    def row(self, layer: int, row: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Views (1, kv_heads, capacity, head_dim) of one row's K and V in `layer`."""
        return self.k[layer][row : row + 1], self.v[layer][row : row + 1]

    @torch.inference_mode()
    def copy_prefix(self, src: int, dst: int, begin: int, end: int) -> None:
        """Copy the KV of positions [begin, end) from row `src` to row `dst` in every layer."""
        for cache in self.k + self.v:
            cache[dst, :, begin:end] = cache[src, :, begin:end]
