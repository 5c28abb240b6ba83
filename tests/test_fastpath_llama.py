"""The fast runner's building blocks against plain references, on CPU with tiny random models (shapes and speed
paths only; behaviour on a real model is covered by test_runner_smollm2.py)."""

from __future__ import annotations

import pytest
import torch

from kanana_longctx.bench.models import random_model
from kanana_longctx.kernels.attention import attend, attend_tiles, merge_states, reference_attention_with_lse
from kanana_longctx.fastpath.decode import GraphDecoder
from kanana_longctx.backends.local import finish_loaded
from kanana_longctx.fastpath.llama import PrefixReusingLlama, supports_fast_path


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


@pytest.mark.parametrize(
    "q_start,q_len,tile",
    [(0, 40, 16), (5, 3, 16), (37, 50, 16), (16, 16, 16), (63, 1, 8), (0, 7, 64), (29, 30, 16), (29, 22, 16), (20, 30, 16)],
)
def test_attend_tiles_matches_float64_reference(q_start, q_len, tile):
    """Fixed-shape tiles: padded query rows, stale keys after the last query, any start and end inside a tile,
    ragged first and last tiles computed exactly or padded."""
    gen = torch.Generator().manual_seed(q_start * 100 + q_len)
    hq, hkv, d = 8, 2, 16
    end = q_start + q_len
    n = end + (-end % tile) + 5
    q = torch.randn(1, q_len, hq, d, generator=gen).transpose(1, 2)  # the projections' (B, T, H, D) layout
    k = torch.randn(1, hkv, n, d, generator=gen)
    v = torch.randn(1, hkv, n, d, generator=gen)
    ref, _ = reference_attention_with_lse(
        q.double(), k[:, :, :end].repeat_interleave(4, 1).double(), v[:, :, :end].repeat_interleave(4, 1).double(),
        causal=True, scale=0.25,
    )
    k[:, :, end:] = 1e4 * torch.randn(k[:, :, end:].shape, generator=gen)  # stale keys the mask must hide
    out = attend_tiles(q, k, v, q_start=q_start, tile=tile, kernel="sdpa", scale=0.25)
    assert out.shape == q.shape
    assert _rel(out, ref) < 1e-5


@pytest.mark.parametrize("q_start,q_len,padded", [(29, 3, []), (29, 22, [(32, 1)]), (20, 30, [(16, 2)]), (0, 40, [(0, 3)])])
def test_ragged_tiles_below_half_run_at_their_exact_shape(q_start, q_len, padded, monkeypatch):
    """A first or last tile with fewer than half its rows real is not padded: a short question over a long
    cached prefix costs its own rows, not a whole tile of attention."""
    from kanana_longctx.kernels import attention

    calls = []
    real = attention._padded_tiles
    monkeypatch.setattr(attention, "_padded_tiles", lambda *a: calls.append((a[5], a[6])) or real(*a))
    q = torch.randn(1, 8, q_len, 16)
    kv = torch.randn(1, 2, 64, 16)
    attend_tiles(q, kv, kv, q_start=q_start, tile=16, kernel="sdpa", scale=0.25)
    assert calls == padded  # (first position, tile count) of the padded run


def test_attend_tiles_needs_the_buffer_to_reach_the_last_tile_end():
    q = torch.zeros(1, 4, 10, 8)
    kv = torch.zeros(1, 2, 12, 8)
    with pytest.raises(ValueError, match="last tile"):
        attend_tiles(q, kv, kv, q_start=0, tile=16, kernel="sdpa", scale=1.0)


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


@pytest.mark.parametrize("tile", [16, 48])
def test_tiled_prefill_with_a_reused_prefix_matches_transformers(tiny, tile):
    model, loaded = tiny
    gen = torch.Generator().manual_seed(5)
    ids = torch.randint(0, 1000, (300,), generator=gen)
    fast = PrefixReusingLlama(loaded, max_tokens=301, chunk_tokens=100, tile_tokens=tile)
    assert fast.max_tokens % tile == 0 and fast.chunk_tokens % tile == 0
    with torch.no_grad():
        ref = model(ids[None]).logits[0, -1]
    assert _rel(fast.prefill(ids, 0), ref) < 1e-5
    other = ids.clone()
    other[131:] = torch.randint(0, 1000, (169,), generator=gen)
    with torch.no_grad():
        ref_other = model(other[None]).logits[0, -1]
    assert _rel(fast.prefill(other[121:], 121), ref_other) < 1e-5
    logits = fast.prefill(ids, 0)
    with torch.no_grad():
        expected = model.generate(ids[None], max_new_tokens=5, do_sample=False)[0, 300:].tolist()
    assert fast.decode(logits, 300, 5, lambda out: False) == expected


@pytest.mark.parametrize("tile", [0, 16])
def test_trimmed_last_layer_gives_the_same_logits_and_every_kv(tiny, tile):
    """The last layer runs attention and MLP for the logits' row only, yet writes K/V for every position: a
    later suffix over that prefix, and decoding, read them."""
    model, loaded = tiny
    ids = torch.randint(0, 1000, (300,), generator=torch.Generator().manual_seed(8))
    full = PrefixReusingLlama(loaded, max_tokens=320, chunk_tokens=64, tile_tokens=tile, trim_last_layer=False)
    trimmed = PrefixReusingLlama(loaded, max_tokens=320, chunk_tokens=64, tile_tokens=tile)
    assert trimmed.trim_last_layer and "last layer" in trimmed.describe()
    assert trimmed._forward(ids[:200], 0, want_logits=False) is None  # a prefix: K/V only
    full._forward(ids[:200], 0, want_logits=False)
    for a, b in zip(full.k_cache + full.v_cache, trimmed.k_cache + trimmed.v_cache):
        assert _rel(a[:, :, :200], b[:, :, :200]) < 1e-6
    assert trimmed.k_cache[-1][:, :, :200].abs().sum() > 0
    with torch.no_grad():
        ref = model(ids[None]).logits[0, -1]
    assert _rel(trimmed.prefill(ids[200:], 200), ref) < 1e-5
    assert _rel(trimmed.prefill(ids, 0), full.prefill(ids, 0)) < 1e-6
    for a, b in zip(full.k_cache + full.v_cache, trimmed.k_cache + trimmed.v_cache):
        assert _rel(a[:, :, :300], b[:, :, :300]) < 1e-6
    with torch.no_grad():
        expected = model.generate(ids[None], max_new_tokens=4, do_sample=False)[0, 300:].tolist()
    assert trimmed.decode(trimmed.prefill(ids, 0), 300, 4, lambda out: False) == expected


@pytest.mark.parametrize("tile", [0, 16])
def test_prefill_rows_joins_short_suffixes_and_matches_transformers(tiny, tile, monkeypatch):
    """Suffixes of several probes in their own rows share one forward (each attends only to its own row); one
    longer than a chunk runs alone. Every probe's logits equal its own transformers forward."""
    model, loaded = tiny
    gen = torch.Generator().manual_seed(9)
    base = torch.randint(0, 1000, (160,), generator=gen)
    probes = [
        torch.cat([base[:100], torch.randint(0, 1000, (40,), generator=gen)]),
        torch.cat([base[:60], torch.randint(0, 1000, (25,), generator=gen)]),
        torch.randint(0, 1000, (50,), generator=gen),
        torch.cat([base[:150], torch.randint(0, 1000, (1,), generator=gen)]),
        torch.randint(0, 1000, (140,), generator=gen),
    ]
    starts = [100, 60, 0, 150, 0]
    fast = PrefixReusingLlama(loaded, max_tokens=200, chunk_tokens=128, tile_tokens=tile, rows=5)
    fast.prefill(base, 0, row=0)
    for row, start in enumerate(starts[1:], 1):
        fast.copy_prefix(0, row, 0, start)
    calls = []
    forward = fast._forward_segments
    monkeypatch.setattr(fast, "_forward_segments", lambda ids, segments, **kw: calls.append(len(segments)) or forward(ids, segments, **kw))
    logits = fast.prefill_rows([(p[s:], s, row) for row, (p, s) in enumerate(zip(probes, starts))])
    # the 140-token probe exceeds the 128-token chunk: two forwards of its own, as it comes; then 40 + 25 + 50 + 1
    # tokens of the other four share one forward
    assert calls == [1, 1, 4]
    for p, out in zip(probes, logits):
        with torch.no_grad():
            ref = model(p[None]).logits[0, -1]
        assert _rel(out, ref) < 1e-5
    with pytest.raises(ValueError, match="own buffer row"):
        fast.prefill_rows([(probes[2], 0, 1), (probes[2], 0, 1)])


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


@pytest.mark.parametrize("splits, varlen", [(None, True), (4, False), (4, True)])
def test_rows_decode_together_like_generate_each(tiny, splits, varlen):
    """Three probes in three buffer rows (two sharing a prefix copied between rows) step together in the static
    decode step; each output equals its own generate, whatever the others do, and a row that stops early stays
    stopped. A fourth row has no probe and is parked."""
    model, loaded = tiny
    gen = torch.Generator().manual_seed(6)
    base = torch.randint(0, 1000, (150,), generator=gen)
    probes = [base.clone(), base.clone(), torch.randint(0, 1000, (90,), generator=gen)]
    probes[0][100:] = torch.randint(0, 1000, (50,), generator=gen)
    probes[1] = torch.cat([base[:60], torch.randint(0, 1000, (70,), generator=gen)])
    with torch.no_grad():
        refs = [model.generate(p[None], max_new_tokens=7, do_sample=False)[0, len(p):].tolist() for p in probes]
    fast = PrefixReusingLlama(loaded, max_tokens=200, rows=4)
    first0 = fast.prefill(probes[0], 0, row=0)
    fast.copy_prefix(0, 1, 0, 60)  # row 1 reuses probe 0's first 60 positions (its own prefix)
    first1 = fast.prefill(probes[1][60:], 60, row=1)
    first2 = fast.prefill(probes[2], 0, row=2)
    decoder = GraphDecoder(fast, splits=splits, varlen=varlen)  # 4: split-KV decoding (CUDA's default), 4 x 50 keys
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
    from kanana_longctx.fastpath import decode as decode_graph

    monkeypatch.setattr(decode_graph, "SPLIT_MIN_KEYS", 16)
    model, loaded = tiny
    gen = torch.Generator().manual_seed(12)
    probes = [torch.randint(0, 1000, (n,), generator=gen) for n in (40, 230, 41)]
    with torch.no_grad():
        refs = [model.generate(p[None], max_new_tokens=5, do_sample=False)[0, len(p):].tolist() for p in probes]
    fast = PrefixReusingLlama(loaded, max_tokens=256, rows=2)
    decoder = GraphDecoder(fast, splits=4, varlen=True)
    spans = []
    for p, ref in zip(probes, refs):
        first = fast.prefill(p, 0, row=1)
        assert decoder.generate(int(first.argmax()), len(p), 5, lambda out: False, row=1) == ref
        spans.append(decoder.layout.max_span)
    assert spans == [16, 59, 16]  # 45 and 46 keys over 4 splits: the floor; 235 keys: ceil(235 / 4)
    assert decoder.captures == 1


def test_split_kv_attention_equals_one_masked_call():
    """Split-KV decode attention against plain masked attention: rows of different live lengths, a split with no
    live key at all, and a parked row whose only live key is far out."""
    from kanana_longctx.fastpath.decode import split_kv_attention

    gen = torch.Generator().manual_seed(8)
    rows, hkv, g, d, cap, splits = 3, 2, 4, 16, 64, 8
    q = torch.randn(rows, hkv, g, d, generator=gen)
    k = torch.randn(rows, hkv, cap + 10, d, generator=gen)
    v = torch.randn(rows, hkv, cap + 10, d, generator=gen)
    mask = torch.zeros(rows, 1, 1, cap, dtype=torch.bool)
    mask[0, ..., :50] = True  # splits 7 and part of 6 empty
    mask[1, ..., :3] = True
    mask[2, ..., 63] = True
    ref = torch.nn.functional.scaled_dot_product_attention(q, k[:, :, :cap], v[:, :, :cap], attn_mask=mask, scale=0.3)
    span = cap // splits
    live = mask.reshape(rows, 1, splits, 1, span).expand(rows, hkv, splits, g, span)
    bias = torch.zeros(live.shape).masked_fill_(~live, float("-inf")).reshape(rows * hkv, splits, g, span)
    out = split_kv_attention(q, k, v, bias, capacity=cap, splits=splits, scale=0.3)
    assert out.shape == ref.shape
    assert _rel(out, ref) < 1e-5


def test_variable_length_splits_read_only_live_keys_and_equal_one_masked_call(monkeypatch):
    """The variable-length layout (each split a sequence told its live key count) against plain masked attention:
    a row live in part of its splits, a row live in one, a row with every key live; the buffer is longer than the
    capacity, so each row's splits start at its own offset in the flat buffer. The same layout re-cut for another
    batch (`fit`) gives the same result from its device-side split length."""
    from kanana_longctx.fastpath import decode as decode_graph
    from kanana_longctx.fastpath.decode import SplitLayout, split_kv_attention_varlen, split_lengths

    assert split_lengths(torch.tensor([50, 3, 64]), splits=8, span=8).tolist() == [
        [8, 8, 8, 8, 8, 8, 2, 0], [3, 0, 0, 0, 0, 0, 0, 0], [8] * 8,
    ]
    assert split_lengths(torch.tensor([50, 3]), splits=4, span=torch.tensor(20)).tolist() == [[20, 20, 10, 0], [3, 0, 0, 0]]
    monkeypatch.setattr(decode_graph, "SPLIT_MIN_KEYS", 4)
    gen = torch.Generator().manual_seed(9)
    rows, hkv, g, d, cap, splits, buffer = 3, 2, 4, 16, 64, 8, 80
    q = torch.randn(rows, hkv, g, d, generator=gen)
    k = torch.randn(rows, hkv, buffer, d, generator=gen)
    v = torch.randn(rows, hkv, buffer, d, generator=gen)
    live = torch.tensor([50, 3, 64])
    mask = (torch.arange(cap)[None] < live[:, None])[:, None, None]
    ref = torch.nn.functional.scaled_dot_product_attention(q, k[:, :, :cap], v[:, :, :cap], attn_mask=mask, scale=0.3)
    layout = SplitLayout(rows, hkv, g, buffer, splits, q.device)
    assert int(layout.span) == 10  # cut for the whole buffer
    for end, span in ((80, 10), (64, 8), (10, 4)):  # 4: the floor of SPLIT_MIN_KEYS keys per split
        assert layout.fit(end) == span == int(layout.span)
        if end < 64:
            continue  # row 2's keys would not be covered
        out = split_kv_attention_varlen(q, k, v, layout.seqlen_k(live), layout, scale=0.3)
        assert out.shape == ref.shape
        assert _rel(out, ref) < 1e-5


def test_split_counts_fill_the_gpu_and_divide_the_capacity():
    from kanana_longctx.fastpath.decode import choose_splits, live_split_count

    assert choose_splits(1, 8, 131072, 132) == 64  # one row at 128K: 512 blocks of 2048 keys
    assert choose_splits(6, 8, 32768, 132) == 8
    assert choose_splits(1, 8, 5120, 132) == 4  # 1280 keys each; 8 would be below SPLIT_MIN_KEYS
    assert choose_splits(8, 8, 4096, 16) == 1  # already enough blocks
    assert choose_splits(1, 8, 3072, 132) == 2
    assert choose_splits(1, 8, 3000, 132) == 1  # 2 x 1500 keys: not a multiple of 16
    assert choose_splits(1, 8, 2000, 132) == 1  # 2 x 1000 keys: too short
    assert live_split_count(6, 8, 33792, 132) == 8  # 384 blocks; the cut per batch needs no divisibility
    assert live_split_count(1, 8, 132096, 132) == 64
    assert live_split_count(1, 8, 5000, 132) == 4  # 8 splits of the buffer would be below SPLIT_MIN_KEYS
    assert live_split_count(8, 8, 4096, 16) == 1


def test_decode_stops_when_told(tiny):
    model, loaded = tiny
    ids = torch.arange(50)
    fast = PrefixReusingLlama(loaded, max_tokens=100)
    out = fast.decode(fast.prefill(ids, 0), 50, 10, lambda toks: len(toks) == 3)
    assert len(out) == 3


def test_decode_capacity_buckets_are_few_and_tight():
    decoder = GraphDecoder.__new__(GraphDecoder)
    decoder.fast = type("Fast", (), {"max_tokens": 140_000})()
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
