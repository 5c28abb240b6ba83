"""FLOP accounting for prefill (pure): what a probe costs without reuse, and what we actually computed.

Per probe of L tokens: 2 x non-embedding parameters x L (matmuls) + 2 x L^2 x hidden x layers (causal attention:
QK^T and PV, each L^2/2 x hidden x 2 FLOPs per layer) — the convention of ../shared/GPU.md and the perf issue.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ModelShape:
    non_embedding_params: float
    hidden: int  # attention width: heads x head_dim
    layers: int
    qkv_params: float = 0.0  # of one layer: the q, k and v projections

    @classmethod
    def from_config(cls, config) -> "ModelShape":
        hidden = int(config.hidden_size)
        heads = int(config.num_attention_heads)
        kv = int(getattr(config, "num_key_value_heads", None) or heads)
        head_dim = int(getattr(config, "head_dim", None) or hidden // heads)
        ffn = int(getattr(config, "intermediate_size", 4 * hidden))
        layers = int(config.num_hidden_layers)
        attn = hidden * heads * head_dim * 2 + hidden * kv * head_dim * 2
        mlp = 3 * hidden * ffn
        return cls(
            non_embedding_params=float(layers * (attn + mlp)),
            hidden=heads * head_dim,
            layers=layers,
            qkv_params=float(hidden * (heads + 2 * kv) * head_dim),
        )


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


def grid_flops(shape: ModelShape, lengths) -> float:
    return sum(prefill_flops(shape, int(n)) for n in lengths)
