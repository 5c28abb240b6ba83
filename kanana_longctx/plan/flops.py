"""FLOP accounting for prefill (pure): what a probe costs without reuse, and what a reuse plan computes.

Usage: shape = ModelShape.from_config(config); planned_flops(shape, plan_reuse(ids, shared, rows), lengths)

Per probe of L tokens: 2 x non-embedding parameters x L (matmuls) + 2 x L^2 x hidden x layers (causal attention:
QK^T and PV, each L^2/2 x hidden x 2 FLOPs per layer); docs/performance.md uses the same convention. The runner's
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
        attn = hidden * heads * head_dim * 2 + hidden * kv * head_dim * 2
        mlp = 3 * hidden * dims.ffn
        return cls(
            non_embedding_params=float(dims.layers * (attn + mlp)),
            hidden=heads * head_dim,
            layers=dims.layers,
            qkv_params=float(hidden * (heads + 2 * kv) * head_dim),
        )

    @classmethod
    def from_params(cls, params: float) -> "ModelShape":
        """Matmuls only, from a parameter count (the dry run's `--params`): 2 x params FLOPs per token, no
        attention term, nothing trimmed."""
        return cls(non_embedding_params=float(params), hidden=0, layers=0)


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
