"""The fast runner's building blocks against plain references, on CPU with tiny random models (shapes and speed
paths only; behaviour on a real model is covered by test_runner_smollm2.py)."""

from __future__ import annotations

import pytest
import torch

from kanana_longctx.bench.models import random_model
from kanana_longctx.run.attention import attend, merge_states, reference_attention_with_lse
from kanana_longctx.run.decode_graph import GraphDecoder
from kanana_longctx.run.engine import finish_loaded
from kanana_longctx.run.fast_llama import PrefixReusingLlama, supports_fast_path


def _rel(a, b) -> float:
    return float((a.double() - b.double()).norm() / b.double().norm())


@pytest.mark.parametrize("kernel", ["sdpa", "eager"])
@pytest.mark.parametrize("q_len,prefix,hq,hkv", [(5, 7, 4, 2), (16, 0, 4, 4), (1, 30, 6, 2), (33, 100, 8, 2)])
def test_attend_matches_float64_reference(kernel, q_len, prefix, hq, hkv):
    gen = torch.Generator().manual_seed(q_len * 1000 + prefix)
    q = torch.randn(1, hq, q_len, 16, generator=gen)
    k = torch.randn(1, hkv, prefix + q_len, 16, generator=gen)
    v = torch.randn(1, hkv, prefix + q_len, 16, generator=gen)
    g = hq // hkv
    ref, _ = reference_attention_with_lse(
        q.double(), k.repeat_interleave(g, 1).double(), v.repeat_interleave(g, 1).double(), causal=True, scale=0.25
    )
    out = attend(q, k, v, q_start=prefix, kernel=kernel, scale=0.25)
    assert out.shape == q.shape
    assert _rel(out, ref) < 1e-5


def test_merge_states_equals_attention_over_the_union():
    gen = torch.Generator().manual_seed(1)
    q = torch.randn(1, 2, 3, 8, generator=gen, dtype=torch.float64)
    k = torch.randn(1, 2, 10, 8, generator=gen, dtype=torch.float64)
    v = torch.randn(1, 2, 10, 8, generator=gen, dtype=torch.float64)
    whole, _ = reference_attention_with_lse(q, k, v, causal=False, scale=0.3)
    o1, l1 = reference_attention_with_lse(q, k[:, :, :4], v[:, :, :4], causal=False, scale=0.3)
    o2, l2 = reference_attention_with_lse(q, k[:, :, 4:], v[:, :, 4:], causal=False, scale=0.3)
    assert _rel(merge_states(o1, l1, o2, l2), whole) < 1e-6  # merged in float32 by design


@pytest.fixture(scope="module")
def tiny():
    model = random_model("tiny", device="cpu", dtype="float32", yarn=True)
    return model, finish_loaded(model, "cpu", "float32", "sdpa", {"factor": 4.4, "original_max_position_embeddings": 4096})


def test_tiny_model_has_yarn_in_its_rotary_embedding(tiny):
    _, loaded = tiny
    assert loaded.rope_attention_factor == pytest.approx(0.1 * torch.log(torch.tensor(4.4)).item() + 1, rel=1e-6)
    assert (loaded.native_context, loaded.max_context) == (4096, int(4096 * 4.4))


def test_fast_prefill_with_a_reused_prefix_matches_transformers(tiny):
    model, loaded = tiny
    assert supports_fast_path(model) == (True, "")
    gen = torch.Generator().manual_seed(2)
    ids = torch.randint(0, 1000, (300,), generator=gen)
    fast = PrefixReusingLlama(loaded, max_tokens=400, chunk_tokens=64)  # several chunks: exercises the split path
    with torch.no_grad():
        ref = model(ids[None]).logits[0, -1]
    assert _rel(fast.prefill(ids, 0), ref) < 1e-5
    other = ids.clone()
    other[150:] = torch.randint(0, 1000, (150,), generator=gen)
    with torch.no_grad():
        ref_other = model(other[None]).logits[0, -1]
    # positions [0, 120) still hold the KV of `ids`, which `other` shares: compute only the rest
    assert _rel(fast.prefill(other[120:], 120), ref_other) < 1e-5


def test_eager_and_static_graph_steps_decode_like_generate(tiny):
    model, loaded = tiny
    gen = torch.Generator().manual_seed(3)
    ids = torch.randint(0, 1000, (200,), generator=gen)
    with torch.no_grad():
        ref = model.generate(ids[None], max_new_tokens=10, do_sample=False)[0, 200:].tolist()
    fast = PrefixReusingLlama(loaded, max_tokens=300)
    eager = fast.decode(fast.prefill(ids, 0), 200, 10, lambda out: False)
    logits = fast.prefill(ids, 0)
    static = GraphDecoder(fast).generate(int(logits.argmax()), 200, 10, lambda out: False)
    assert eager == ref
    assert static == ref


def test_decode_stops_when_told(tiny):
    model, loaded = tiny
    ids = torch.arange(50)
    fast = PrefixReusingLlama(loaded, max_tokens=100)
    out = fast.decode(fast.prefill(ids, 0), 50, 10, lambda toks: len(toks) == 3)
    assert len(out) == 3


def test_static_steps_with_a_bucket_smaller_than_the_buffer(tiny):
    """The KV buffer is longer than the first capacity bucket (4096): warm-up writes at a scratch position
    beyond the bucket without touching live positions, and decoding still matches generate."""
    model, loaded = tiny
    gen = torch.Generator().manual_seed(4)
    ids = torch.randint(0, 1000, (100,), generator=gen)
    with torch.no_grad():
        ref = model.generate(ids[None], max_new_tokens=6, do_sample=False)[0, 100:].tolist()
    fast = PrefixReusingLlama(loaded, max_tokens=5000)
    decoder = GraphDecoder(fast)
    assert decoder.bucket(106) == 4096
    logits = fast.prefill(ids, 0)
    assert decoder.generate(int(logits.argmax()), 100, 6, lambda out: False) == ref


def test_static_step_ignores_stale_values_in_masked_positions(tiny):
    """Positions beyond the live ones are masked but still read: stale K/V left by earlier probes must not leak in.
    (The buffer starts zeroed, so it never holds NaN garbage, which no mask could neutralise: 0 x NaN = NaN.)"""
    model, loaded = tiny
    ids = torch.arange(100)
    with torch.no_grad():
        ref = model.generate(ids[None], max_new_tokens=5, do_sample=False)[0, 100:].tolist()
    fast = PrefixReusingLlama(loaded, max_tokens=5000)
    for cache in fast.k_cache + fast.v_cache:
        assert not cache.isnan().any()
        cache[:, :, 200:].normal_(0, 100)  # stale values beyond the probe, far from the live ones
    logits = fast.prefill(ids, 0)
    out = GraphDecoder(fast).generate(int(logits.argmax()), 100, 5, lambda toks: False)
    assert out == ref
