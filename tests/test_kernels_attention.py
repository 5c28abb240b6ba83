"""The split and tiled attention of a suffix over a cached prefix against float64 references (CPU kernels; the
GPU kernels in test_gpu.py)."""

from __future__ import annotations

import pytest
import torch

from kanana_longctx.kernels.attention import attend, attend_tiles, merge_states, reference_attention_with_lse


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
    assert tiled_error_against_float64(q_start, q_len, tile) < 1e-5


def tiled_error_against_float64(q_start: int, q_len: int, tile: int) -> float:
    """attend_tiles on random (8 query, 2 kv heads) attention with stale keys after the queries, against float64
    attention: the relative error (test_kernels_merge_triton runs it on the batched merge too)."""
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
    return _rel(out, ref)


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


@pytest.mark.parametrize("q_start,q_len", [(0, 120), (37, 90), (5, 150), (16, 64)])
def test_attend_tiles_in_groups_matches_float64_reference(q_start, q_len, monkeypatch):
    """Tiles run in groups (a batched square call and the merges per group, attention.TILE_GROUP): groups of 2
    end inside every call here, and the answer is float64 attention's."""
    from kanana_longctx.kernels import attention

    monkeypatch.setattr(attention, "TILE_GROUP", 2)
    assert tiled_error_against_float64(q_start, q_len, 16) < 1e-5


@pytest.mark.parametrize("q_start,first,lo,hi,n", [(37, 32, 37, 127, 6), (0, 0, 0, 96, 6), (20, 16, 20, 30, 1), (50, 48, 64, 80, 3)])
def test_query_tiles_hold_each_row_at_its_position_and_zeros_elsewhere(q_start, first, lo, hi, n):
    """_query_tiles copies q's rows of positions [lo, hi) into (B, n, heads, tile, D) tiles from `first` (a partial
    first tile, whole tiles, a partial last tile) and leaves every other row zero."""
    from kanana_longctx.kernels.attention import _query_tiles

    tile = 16
    q = torch.randn(1, 140, 4, 8).transpose(1, 2)  # (B, H, T, D) in the projections' layout
    tiles = _query_tiles(q, q_start, first, lo, hi, n, tile)
    expected = torch.zeros(1, 4, n * tile, 8)
    expected[:, :, lo - first : hi - first] = q[:, :, lo - q_start : hi - q_start]
    assert torch.equal(tiles, expected.view(1, 4, n, tile, 8).transpose(1, 2))
