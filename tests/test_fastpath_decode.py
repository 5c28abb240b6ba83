"""Greedy decoding of the fast engine (eager and the static graph step, on CPU) against transformers' generate,
with tiny random models (shapes and speed paths; a real model in test_run_runner.py)."""

from __future__ import annotations

import pytest
import torch

from kanana_longctx.fastpath.decode import GraphDecoder
from kanana_longctx.fastpath.llama import PrefixReusingLlama


def _generate(model, ids, new_tokens: int) -> list[int]:
    """transformers' own greedy continuation of `ids`: the reference every decode path must equal."""
    with torch.no_grad():
        return model.generate(ids[None], max_new_tokens=new_tokens, do_sample=False)[0, len(ids) :].tolist()


def test_eager_and_static_graph_steps_decode_like_generate(tiny):
    model, loaded = tiny
    gen = torch.Generator().manual_seed(3)
    ids = torch.randint(0, 1000, (200,), generator=gen)
    ref = _generate(model, ids, 10)
    fast = PrefixReusingLlama(loaded, max_tokens=300)
    eager = fast.decode_rows([(0, fast.prefill(ids, 0), 200, lambda out: False)], 10)[0]
    logits = fast.prefill(ids, 0)
    static = GraphDecoder(fast.parts, fast.kv).generate_rows([(0, int(logits.argmax()), 200, lambda out: False)], 10)[0]
    assert eager == ref
    assert static == ref


@pytest.mark.parametrize(
    "splits, varlen, fused", [(None, True, False), (4, False, False), (4, True, False), (4, True, True), (None, False, True)]
)
def test_rows_decode_together_like_generate_each(tiny, splits, varlen, fused):
    """Three probes in three buffer rows (two sharing a prefix copied between rows) step together in the static
    decode step; each output equals its own generate, whatever the others do, and a row that stops early stays
    stopped. A fourth row has no probe and is parked. `fused`: the step runs the engine's fused layer halves with
    the rows as one sequence's tokens (the engine's default), else transformers' modules."""
    model, loaded = tiny
    gen = torch.Generator().manual_seed(6)
    base = torch.randint(0, 1000, (150,), generator=gen)
    probes = [base.clone(), base.clone(), torch.randint(0, 1000, (90,), generator=gen)]
    probes[0][100:] = torch.randint(0, 1000, (50,), generator=gen)
    probes[1] = torch.cat([base[:60], torch.randint(0, 1000, (70,), generator=gen)])
    refs = [_generate(model, p, 7) for p in probes]
    fast = PrefixReusingLlama(loaded, max_tokens=200, rows=4)
    first0 = fast.prefill(probes[0], 0, row=0)
    fast.kv.copy_prefix(0, 1, 0, 60)  # row 1 reuses probe 0's first 60 positions (its own prefix)
    first1 = fast.prefill(probes[1][60:], 60, row=1)
    first2 = fast.prefill(probes[2], 0, row=2)
    assert fast.fused is not None
    decoder = GraphDecoder(fast.parts, fast.kv, splits=splits, varlen=varlen, layers=fast.fused if fused else None)  # 4: split-KV decoding (CUDA's default), 4 x 50 keys
    assert decoder.splits(200) == (4 if splits else 1)
    outs = decoder.generate_rows(
        [(0, int(first0.argmax()), 150, lambda out: False),
         (1, int(first1.argmax()), 130, lambda out: len(out) == 3),
         (2, int(first2.argmax()), 90, lambda out: False)],
        7,
    )
    assert outs[0] == refs[0]
    assert outs[1] == refs[1][:3]
    assert outs[2] == refs[2]
    assert fast.decode_rows([(2, first2, 90, lambda out: False)], 7) == [refs[2]]  # the eager per-row path


def test_one_decode_graph_serves_batches_of_any_length(tiny, monkeypatch):
    """With the variable-length layout the splits are re-cut per batch (a short batch, then a longer one, then
    the short one again) under one recorded step, and each batch still decodes like generate."""
    from kanana_longctx.kernels import choice

    monkeypatch.setattr(choice, "SPLIT_MIN_KEYS", 16)
    model, loaded = tiny
    gen = torch.Generator().manual_seed(12)
    probes = [torch.randint(0, 1000, (n,), generator=gen) for n in (40, 230, 41)]
    refs = [_generate(model, p, 5) for p in probes]
    fast = PrefixReusingLlama(loaded, max_tokens=256, rows=2)
    decoder = GraphDecoder(fast.parts, fast.kv, splits=4, varlen=True)
    spans = []
    for p, ref in zip(probes, refs):
        first = fast.prefill(p, 0, row=1)
        assert decoder.generate_rows([(1, int(first.argmax()), len(p), lambda out: False)], 5)[0] == ref
        spans.append(decoder.layout.max_span)
    assert spans == [16, 59, 16]  # 45 and 46 keys over 4 splits: the floor; 235 keys: ceil(235 / 4)
    assert decoder.captures == 1


def test_decode_stops_when_told(tiny):
    model, loaded = tiny
    ids = torch.arange(50)
    fast = PrefixReusingLlama(loaded, max_tokens=100)
    out = fast.decode_rows([(0, fast.prefill(ids, 0), 50, lambda toks: len(toks) == 3)], 10)[0]
    assert len(out) == 3


def test_decode_capacity_buckets_are_few_and_tight():
    decoder = GraphDecoder.__new__(GraphDecoder)
    decoder.kv = type("KV", (), {"capacity": 140_000})()
    decoder.layout = None  # the masked path's buckets (the variable-length layout needs none)
    ends = range(1, 140_001, 97)
    buckets = {decoder.bucket(n) for n in ends}
    assert all(n <= decoder.bucket(n) <= max(n + 4096, 1.25 * n) or decoder.bucket(n) == 140_000 for n in ends)
    assert len(buckets) <= 20  # one CUDA graph each
    assert [decoder.bucket(n) for n in (100, 4097, 20000, 32769, 131073)] == [4096, 8192, 20480, 40960, 140_000]


def test_static_steps_with_a_bucket_smaller_than_the_buffer(tiny):
    """The KV buffer is longer than the first capacity bucket (4096): warm-up writes at a scratch position
    beyond the bucket without touching live positions, and decoding still matches generate."""
    model, loaded = tiny
    gen = torch.Generator().manual_seed(4)
    ids = torch.randint(0, 1000, (100,), generator=gen)
    ref = _generate(model, ids, 6)
    fast = PrefixReusingLlama(loaded, max_tokens=5000)
    decoder = GraphDecoder(fast.parts, fast.kv)
    assert decoder.bucket(106) == 4096
    logits = fast.prefill(ids, 0)
    assert decoder.generate_rows([(0, int(logits.argmax()), 100, lambda out: False)], 6)[0] == ref


def test_static_step_ignores_stale_values_in_masked_positions(tiny):
    """Positions beyond the live ones are masked but still read: stale K/V left by earlier probes must not leak in.
    (The buffer starts zeroed, so it never holds NaN garbage, which no mask could neutralise: 0 x NaN = NaN.)"""
    model, loaded = tiny
    ids = torch.arange(100)
    ref = _generate(model, ids, 5)
    fast = PrefixReusingLlama(loaded, max_tokens=5000)
    for cache in fast.kv.k + fast.kv.v:
        assert not cache.isnan().any()
        cache[:, :, 200:].normal_(0, 100)  # stale values beyond the probe, far from the live ones
    logits = fast.prefill(ids, 0)
    out = GraphDecoder(fast.parts, fast.kv).generate_rows([(0, int(logits.argmax()), 100, lambda toks: False)], 5)[0]
    assert out == ref


@pytest.mark.parametrize("fused", [False, True])
def test_each_row_steps_at_its_own_position(sharp_tiny, fused):
    """Rows at different positions in one step (the fused halves take them as one sequence's tokens, each with its
    own rotary position) decode like generate, on a model whose attention is peaked enough for positions to matter
    (checked: with the rows' positions permuted, every row fails)."""
    model, loaded = sharp_tiny
    gen = torch.Generator().manual_seed(6)
    probes = [torch.randint(0, 1000, (n,), generator=gen) for n in (150, 130, 90)]
    refs = [_generate(model, p, 7) for p in probes]
    fast = PrefixReusingLlama(loaded, max_tokens=200, rows=4)
    firsts = [fast.prefill(p, 0, row=r) for r, p in enumerate(probes)]
    decoder = GraphDecoder(fast.parts, fast.kv, splits=4, varlen=True, layers=fast.fused if fused else None)
    outs = decoder.generate_rows(
        [(r, int(first.argmax()), len(p), lambda out: False) for r, (first, p) in enumerate(zip(firsts, probes))], 7
    )
    assert outs == refs


def test_a_failed_live_key_check_falls_back_to_masking_and_says_so(tiny, monkeypatch):
    """Where the live-key mode fails its check, the decoder masks whole capacity buckets instead, decodes the same
    tokens, and its note (which the run reports) says why."""
    from kanana_longctx.fastpath import decode

    model, loaded = tiny
    monkeypatch.setattr(decode, "varlen_works", lambda device: (False, "variable-length split-KV unavailable (X)"))
    ids = torch.randint(0, 1000, (120,), generator=torch.Generator().manual_seed(9))
    fast = PrefixReusingLlama(loaded, max_tokens=200)
    decoder = GraphDecoder(fast.parts, fast.kv, layers=fast.fused)
    assert not decoder.varlen and not decoder.triton and decoder.layout is None
    assert decoder.fallback_note == "variable-length split-KV unavailable (X); the decode step reads whole capacity buckets"
    first = fast.prefill(ids, 0)
    assert decoder.generate_rows([(0, int(first.argmax()), 120, lambda out: False)], 6)[0] == _generate(model, ids, 6)
