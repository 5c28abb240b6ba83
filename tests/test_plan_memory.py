"""KV rows and prefill chunk chosen together against one memory budget, the buffer length and the plain loop's
batch size (kanana_longctx.plan.memory)."""

import pytest

from kanana_longctx.bench.models import shape_config
from kanana_longctx.plan.dims import ModelDims
from kanana_longctx.plan.memory import (
    MAX_ROWS,
    PLAIN_MAX_BATCH,
    MemoryPlan,
    buffer_tokens_for,
    chunk_bytes_per_token,
    dtype_bytes,
    plain_batch_size,
    plan_memory,
    row_kv_bytes,
    run_budget_bytes,
)

GIB = 2**30
H100_TOTAL = int(79.19 * GIB)  # what torch.cuda.mem_get_info reports for an H100 80GB HBM3


def _llama_8b():
    config = shape_config("llama-8b", yarn=True)
    per_token = chunk_bytes_per_token(config.hidden_size, config.intermediate_size, 2)
    h, kv_width = config.hidden_size, config.num_key_value_heads * config.head_dim
    layer = 2 * h * h + 2 * h * kv_width + 3 * h * config.intermediate_size  # q, o; k, v; gate, up, down
    weights = 2 * (config.num_hidden_layers * layer + 2 * config.vocab_size * h)
    return config, per_token, weights


def _plan_on_h100(buffer_tokens: int, probes: int = 225) -> MemoryPlan:
    config, per_token, weights = _llama_8b()
    budget = run_budget_bytes(H100_TOTAL, weights, H100_TOTAL - weights)
    return plan_memory(
        row_bytes=row_kv_bytes(ModelDims.from_config(config), buffer_tokens), chunk_bytes_per_token=per_token, budget_bytes=budget, probes=probes
    )


def test_activation_estimate_matches_the_h100_peaks():
    """Peaks measured on the H100 (8B, 128,000 tokens, buffer 129,024): 34.87 GiB with 1 row and 32K chunks,
    48.59 with 2 rows and 16K chunks, 50.66 with 2 rows and 32K chunks (docs/performance.md)."""
    config, per_token, weights = _llama_8b()
    assert weights / GIB == pytest.approx(14.96, abs=0.01)
    row = row_kv_bytes(ModelDims.from_config(config), 129024)
    for rows, chunk, measured in ((1, 32768, 34.87), (2, 16384, 48.59), (2, 32768, 50.66)):
        assert (weights + rows * row + chunk * per_token) / GIB == pytest.approx(measured, abs=0.15)


def test_128k_on_an_80gb_card_takes_two_rows_with_16k_chunks():
    """The case the plan exists for: 32K chunks leave room for one 15.75 GiB row only; 16K chunks, for two."""
    plan = _plan_on_h100(129024)
    assert (plan.rows, plan.chunk_tokens) == (2, 16384)
    assert plan.fits
    _, _, weights = _llama_8b()
    assert (weights + plan.planned_bytes) / GIB <= 50


def test_32k_fills_the_rows_before_it_keeps_long_chunks():
    plan = _plan_on_h100(32768, probes=480)
    assert (plan.rows, plan.chunk_tokens) == (MAX_ROWS, 16384)


def test_the_longest_chunk_that_fits_beside_the_rows():
    plan = plan_memory(row_bytes=10, chunk_bytes_per_token=1, budget_bytes=30 + 32768, probes=3, chunks=(16384, 32768))
    assert (plan.rows, plan.chunk_tokens, plan.planned_bytes) == (3, 32768, 30 + 32768)
    plan = plan_memory(row_bytes=10, chunk_bytes_per_token=1, budget_bytes=30 + 32767, probes=3)
    assert (plan.rows, plan.chunk_tokens) == (3, 16384)


def test_rows_are_capped_by_probes_and_the_maximum():
    assert plan_memory(row_bytes=1, chunk_bytes_per_token=1, budget_bytes=10**9, probes=3).rows == 3
    assert plan_memory(row_bytes=1, chunk_bytes_per_token=1, budget_bytes=10**9, probes=100).rows == MAX_ROWS
    assert plan_memory(row_bytes=1, chunk_bytes_per_token=1, budget_bytes=10**9, probes=0).rows == 1


def test_nothing_fits_one_row_and_the_shortest_chunk_flagged():
    plan = plan_memory(row_bytes=100, chunk_bytes_per_token=1, budget_bytes=50, probes=4)
    assert (plan.rows, plan.chunk_tokens) == (1, 16384)
    assert not plan.fits
    assert "over budget" in plan.describe()


def test_budget_counts_what_is_allocated_and_what_is_free():
    total = 100 * GIB
    assert run_budget_bytes(total, 20 * GIB, 80 * GIB) == int(0.63 * total) - 20 * GIB
    assert run_budget_bytes(total, 20 * GIB, 10 * GIB) == int(0.6 * 10 * GIB)  # another process holds the rest
    assert run_budget_bytes(total, 70 * GIB, 30 * GIB) == 0


def test_bad_sizes_are_refused():
    with pytest.raises(ValueError):
        plan_memory(row_bytes=0, chunk_bytes_per_token=1, budget_bytes=10, probes=1)


H200_TOTAL = int(139.8 * GIB)  # an H200 (141 GB HBM3e) as torch.cuda.mem_get_info reports it


def test_a_cap_plans_a_larger_card_like_a_smaller_one():
    """`--max-memory 50` on an H200 gives the 80 GB H100's plan at 128K (2 rows, 16K chunks, under 50 GiB with
    the weights); without the cap the H200 takes more rows, and its peak goes past 50 GiB."""
    config, per_token, weights = _llama_8b()
    row = row_kv_bytes(ModelDims.from_config(config), 129024)

    def plan(cap_gib: float) -> MemoryPlan:
        budget = run_budget_bytes(H200_TOTAL, weights, H200_TOTAL - weights, cap=int(cap_gib * GIB))
        return plan_memory(row_bytes=row, chunk_bytes_per_token=per_token, budget_bytes=budget, probes=225)

    capped, uncapped = plan(50), plan(0)
    assert (capped.rows, capped.chunk_tokens) == (_plan_on_h100(129024).rows, 16384) == (2, 16384)
    assert (weights + capped.planned_bytes) / GIB <= 50
    assert uncapped.rows > 2 and (weights + uncapped.planned_bytes) / GIB > 50


def test_a_cap_bounds_the_budget_weights_included():
    total = 100 * GIB
    assert run_budget_bytes(total, 20 * GIB, 80 * GIB, cap=30 * GIB) == 10 * GIB
    assert run_budget_bytes(total, 20 * GIB, 80 * GIB, cap=90 * GIB) == int(0.63 * total) - 20 * GIB  # share rules
    assert run_budget_bytes(total, 20 * GIB, 80 * GIB, cap=10 * GIB) == 0  # the weights alone are over the cap


def test_the_buffer_ends_on_a_tile_and_a_row_holds_k_and_v_of_every_layer():
    assert buffer_tokens_for(128001, 1024) == 129024 and buffer_tokens_for(1024, 1024) == 1024
    assert buffer_tokens_for(1000, 0) == 1000
    dims = ModelDims.from_config(_llama_8b()[0])
    assert row_kv_bytes(dims, 131072) == 16 * GIB  # 2 x 32 layers x 8 kv heads x 128 x 131072 x 2 bytes
    assert row_kv_bytes(dims, 10, element_size=4) == 2 * row_kv_bytes(dims, 10)
    assert (dtype_bytes("float32"), dtype_bytes("bfloat16"), dtype_bytes("float16")) == (4, 2, 2)


def test_the_plain_loops_batch_takes_kv_and_activations_per_token():
    dims = ModelDims.from_config(_llama_8b()[0])
    per_token = row_kv_bytes(dims, 1) + 6 * dims.ffn * 2
    assert plain_batch_size(dims, 32768, 3.5 * per_token * 32768, 2) == 3
    assert plain_batch_size(dims, 32768, 0, 2) == 1  # never less than one
    assert plain_batch_size(dims, 100, 1e15, 2) == PLAIN_MAX_BATCH
