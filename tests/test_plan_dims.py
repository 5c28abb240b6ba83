"""Model dimensions read from a config in one place, with its quirks resolved once."""

from __future__ import annotations

import types

from kanana_longctx.bench.models import shape_config
from kanana_longctx.plan.dims import ModelDims


def test_a_grouped_query_config():
    dims = ModelDims.from_config(shape_config("llama-8b", yarn=False))
    assert (dims.hidden, dims.layers, dims.heads, dims.kv_heads, dims.head_dim, dims.ffn) == (4096, 32, 32, 8, 128, 14336)
    assert (dims.groups, dims.attention_width) == (4, 4096)


def test_missing_kv_heads_head_dim_and_ffn_take_their_defaults():
    config = types.SimpleNamespace(hidden_size=768, num_attention_heads=12, num_hidden_layers=2)
    dims = ModelDims.from_config(config)
    assert (dims.kv_heads, dims.head_dim, dims.ffn, dims.groups) == (12, 64, 3072, 1)
    explicit = types.SimpleNamespace(hidden_size=768, num_attention_heads=12, num_hidden_layers=2,
                                     num_key_value_heads=None, head_dim=128, intermediate_size=2048)
    assert (ModelDims.from_config(explicit).kv_heads, ModelDims.from_config(explicit).head_dim) == (12, 128)
    assert ModelDims.from_config(explicit).attention_width == 12 * 128
