"""FLOP accounting for prefill (pure): what a probe costs without reuse, and what a reuse plan computes.

Usage: shape = ModelShape.from_config(config); planned_flops(shape, plan_reuse(ids, shared, rows), lengths)

Per probe of L tokens: 2 x non-embedding parameters x L (matmuls) + 2 x L^2 x hidden x layers (causal attention:
QK^T and PV, each L^2/2 x hidden x 2 FLOPs per layer); docs/performance.md uses the same convention. For a
mixture of experts the parameters are those a token runs (its top-k experts, the shared ones, the router), for MLA
the latent projections, and the attention width heads x (qk + v head dims) / 2. The runner's
computed FLOPs and the dry run's "with prefix reuse" both come from `planned_flops`, over the same plan.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

from kanana_longctx.plan.dims import ModelDims
from kanana_longctx.plan.reuse import Batch, planned_work


@dataclass(frozen=True)
class ModelShape:
    non_embedding_params: float
    hidden: int  # attention width: heads x head_dim
    layers: int
    qkv_params: float = 0.0  # of one layer: the q, k and v projections

    @classmethod
    def from_config(cls, config) -> "ModelShape":
        return cls.from_dims(ModelDims.from_config(config))

    @classmethod
    def from_dims(cls, dims: ModelDims) -> "ModelShape":
        hidden, heads, kv, head_dim = dims.hidden, dims.heads, dims.kv_heads, dims.head_dim
        if dims.kv_lora_rank:
            qkv, out = _mla_params(dims), heads * dims.v_head_dim * hidden
        else:
            qkv, out = hidden * (heads + 2 * kv) * head_dim, hidden * heads * head_dim
        dense = 3 * hidden * dims.ffn
        if dims.experts:
            moe = 3 * hidden * (dims.top_k * dims.expert_ffn + dims.shared_ffn) + hidden * dims.experts
            mlp = dims.dense_layers * dense + (dims.layers - dims.dense_layers) * moe
        else:
            mlp = dims.layers * dense
        return cls(
            non_embedding_params=float(dims.layers * (qkv + out) + mlp),
            hidden=heads * head_dim,
            layers=dims.layers,
            qkv_params=float(qkv),
        )

    @classmethod
    def from_params(cls, params: float) -> "ModelShape":
        """Matmuls only, from a parameter count (the dry run's `--params`): 2 x params FLOPs per token, no
        attention term, nothing trimmed."""
        return cls(non_embedding_params=float(params), hidden=0, layers=0)


def _mla_params(dims: ModelDims) -> int:
    """One MLA layer's projections before attention: queries (through their latent where there is one), the KV
    latent with the shared rope key, and the latent's expansion to every head's nope key and value."""
    hidden, heads = dims.hidden, dims.heads
    if dims.q_lora_rank:
        q = hidden * dims.q_lora_rank + dims.q_lora_rank * heads * dims.qk_head_dim
    else:
        q = hidden * heads * dims.qk_head_dim
    kv_a = hidden * (dims.kv_lora_rank + dims.qk_rope_head_dim)
    kv_b = dims.kv_lora_rank * heads * (dims.qk_head_dim - dims.qk_rope_head_dim + dims.v_head_dim)
    return q + kv_a + kv_b


def prefill_flops(shape: ModelShape, length: int) -> float:
    """FLOPs of a full causal prefill of `length` tokens (no reuse)."""
    return 2.0 * shape.non_embedding_params * length + 2.0 * length * length * shape.hidden * shape.layers


def suffix_flops(shape: ModelShape, prefix: int, suffix: int) -> float:
    """FLOPs of computing `suffix` tokens against `prefix` cached ones (rectangle + causal square)."""
    attn = 2.0 * shape.hidden * shape.layers * (2.0 * suffix * prefix + suffix * suffix)
    return 2.0 * shape.non_embedding_params * suffix + attn


def last_layer_skipped_flops(shape: ModelShape, prefix: int, rows: int) -> float:
    """FLOPs the trimmed last layer (kanana_longctx.fastpath.llama) leaves out for `rows` query rows that follow
    `prefix` positions: their attention (rectangle + causal square, as in `suffix_flops`), o_proj and MLP. It still
    runs their QKV matmul, for the K/V the cache needs."""
    if rows <= 0:
        return 0.0
    per_layer = shape.non_embedding_params / shape.layers
    attention = 2.0 * shape.hidden * (2.0 * rows * prefix + rows * rows)
    return 2.0 * (per_layer - shape.qkv_params) * rows + attention


def span_flops(shape: ModelShape, start: int, tokens: int, *, logits: bool, trimmed: bool) -> float:
    """FLOPs the fast engine computes for `tokens` positions after `start` cached ones: the suffix, less what the
    trimmed last layer leaves out (every row but the logits' one; all rows of a span without logits)."""
    skipped = last_layer_skipped_flops(shape, start, tokens - 1 if logits else tokens) if trimmed else 0.0
    return suffix_flops(shape, start, tokens) - skipped


def planned_flops(shape: ModelShape, batches: Sequence[Batch], lengths: Sequence[int], *, trimmed: bool) -> float:
    """FLOPs of every span a reuse plan computes (`lengths`: each probe's token count, in the plan's order)."""
    return sum(
        span_flops(shape, begin, end - begin, logits=logits, trimmed=trimmed)
        for begin, end, logits in planned_work(batches, lengths)
    )
