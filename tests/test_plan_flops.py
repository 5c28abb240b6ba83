"""FLOP accounting (pure): the conventions of the perf issue, and what the trimmed last layer leaves out."""

from __future__ import annotations

import pytest

from kanana_longctx.bench.models import shape_config
from kanana_longctx.plan.flops import (
    ModelShape, last_layer_skipped_flops, planned_flops, prefill_flops, span_flops, suffix_flops,
)
from kanana_longctx.plan.reuse import Batch, Extend, Suffix


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


def test_a_plan_costs_the_sum_of_its_spans(llama8b):
    """A shared part of 1000 tokens without logits, then two probes from it: the trimmed last layer computes the
    logits' row of each suffix only, and nothing of the shared part's last layer but its K/V."""
    plan = [Batch(steps=(Extend(0, -1, 0, 1000),), suffixes=(Suffix(0, 0, 1000), Suffix(1, 1, 1000)))]
    lengths = [1300, 1100]
    full = planned_flops(llama8b, plan, lengths, trimmed=False)
    assert full == pytest.approx(suffix_flops(llama8b, 0, 1000) + suffix_flops(llama8b, 1000, 300)
                                 + suffix_flops(llama8b, 1000, 100))
    trimmed = planned_flops(llama8b, plan, lengths, trimmed=True)
    assert trimmed == pytest.approx(full - last_layer_skipped_flops(llama8b, 0, 1000)
                                    - last_layer_skipped_flops(llama8b, 1000, 299)
                                    - last_layer_skipped_flops(llama8b, 1000, 99))
    assert span_flops(llama8b, 1000, 300, logits=True, trimmed=False) == suffix_flops(llama8b, 1000, 300)


def test_a_parameter_count_gives_the_matmul_estimate():
    shape = ModelShape.from_params(8e9)
    assert prefill_flops(shape, 1000) == 2 * 8e9 * 1000
    plan = [Batch(steps=(), suffixes=(Suffix(0, 0, 400),))]
    assert planned_flops(shape, plan, [1000], trimmed=False) == 2 * 8e9 * 600
