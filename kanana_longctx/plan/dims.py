"""The dimensions of a decoder-only transformer as its config declares them, read in one place (pure).

Usage: dims = ModelDims.from_config(model.config); dims.kv_heads, dims.head_dim, dims.groups

Every consumer (FLOP accounting, memory sizing, the fast forward, the fused layers) reads these instead of the
config, so a config's quirks (no `num_key_value_heads`: as many kv heads as query heads; no `head_dim`: hidden
size over heads) are resolved once. Works on a transformers config object or anything with the same attributes.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass


@dataclass(frozen=True)
class ModelDims:
    hidden: int  # the residual stream's width (hidden_size)
    layers: int
    heads: int  # query heads
    kv_heads: int
    head_dim: int
    ffn: int  # the MLP's intermediate width

    @classmethod
    def from_config(cls, config) -> "ModelDims":
        hidden = int(config.hidden_size)
        heads = int(config.num_attention_heads)
        return cls(
            hidden=hidden,
            layers=int(config.num_hidden_layers),
            heads=heads,
            kv_heads=int(getattr(config, "num_key_value_heads", None) or heads),
            head_dim=int(getattr(config, "head_dim", None) or hidden // heads),
            ffn=int(getattr(config, "intermediate_size", 4 * hidden)),
        )

    @property
    def groups(self) -> int:
        """Query heads per kv head (grouped-query attention)."""
        return self.heads // self.kv_heads

    @property
    def attention_width(self) -> int:
        """heads x head_dim: the width of the attention output (o_proj's input)."""
        return self.heads * self.head_dim

    def to_dict(self) -> dict:
        return asdict(self)
