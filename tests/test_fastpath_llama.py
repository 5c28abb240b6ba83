"""The fast engine's prefill (chunks, tiles, the trimmed last layer, joined suffixes) against transformers, on CPU
with tiny random models (shapes and speed paths; behaviour on a real model is covered by test_run_runner.py)."""

from __future__ import annotations

import pytest
import torch

from kanana_longctx.fastpath.llama import PrefixReusingLlama, supports_fast_path


def _rel(a, b) -> float:
    return float((a.double() - b.double()).norm() / b.double().norm())


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
    assert fast.decode_rows([(0, logits, 300, lambda out: False)], 5)[0] == expected


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
    for a, b in zip(full.kv.k + full.kv.v, trimmed.kv.k + trimmed.kv.v):
        assert _rel(a[:, :, :200], b[:, :, :200]) < 1e-6
    assert trimmed.kv.k[-1][:, :, :200].abs().sum() > 0
    with torch.no_grad():
        ref = model(ids[None]).logits[0, -1]
    assert _rel(trimmed.prefill(ids[200:], 200), ref) < 1e-5
    assert _rel(trimmed.prefill(ids, 0), full.prefill(ids, 0)) < 1e-6
    for a, b in zip(full.kv.k + full.kv.v, trimmed.kv.k + trimmed.kv.v):
        assert _rel(a[:, :, :300], b[:, :, :300]) < 1e-6
    with torch.no_grad():
        expected = model.generate(ids[None], max_new_tokens=4, do_sample=False)[0, 300:].tolist()
    assert trimmed.decode_rows([(0, trimmed.prefill(ids, 0), 300, lambda out: False)], 4)[0] == expected


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
        fast.kv.copy_prefix(0, row, 0, start)
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
