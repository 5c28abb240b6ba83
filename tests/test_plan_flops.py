"""FLOP accounting (pure): the conventions of the perf issue, and what the trimmed last layer leaves out."""

from __future__ import annotations

import pytest

from kanana_longctx.bench.models import shape_config
from kanana_longctx.plan.flops import ModelShape, last_layer_skipped_flops, prefill_flops, suffix_flops


@pytest.fixture(scope="module")
def llama8b():
    return ModelShape.from_config(shape_config("llama-8b", yarn=False))


def test_llama_8b_shape_counts(llama8b):
    assert llama8b.non_embedding_params == pytest.approx(6.98e9, rel=1e-3)  # Llama-3-8B without its embeddings
    assert llama8b.qkv_params == 4096 * (32 + 2 * 8) * 128
    assert (llama8b.hidden, llama8b.layers) == (4096, 32)


@pytest.mark.parametrize("prefix, suffix", [(0, 1000), (8000, 256), (100_000, 28_000)])
def test_a_suffix_costs_what_the_longer_prefill_adds(llama8b, prefix, suffix):
    assert suffix_flops(llama8b, prefix, suffix) == pytest.approx(
        prefill_flops(llama8b, prefix + suffix) - prefill_flops(llama8b, prefix), rel=1e-12
    )


@pytest.mark.parametrize("prefix, rows", [(0, 32768), (8000, 255), (120_000, 4095)])
def test_the_trimmed_last_layer_skips_its_share_except_the_qkv_matmul(llama8b, prefix, rows):
    one_layer = suffix_flops(llama8b, prefix, rows) / llama8b.layers
    assert last_layer_skipped_flops(llama8b, prefix, rows) == pytest.approx(one_layer - 2 * llama8b.qkv_params * rows)
    assert last_layer_skipped_flops(llama8b, prefix, 0) == 0.0
