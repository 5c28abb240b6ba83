"""The batched tile merge (kernels.merge.merge_tiles_into) on the CPU, through Triton's interpreter: the rows it
writes, the rows it leaves alone, and the tiled attention on it against float64 attention. Float32 only (the
interpreter's bfloat16 is not exact; test_gpu.py checks the compiled kernel in bf16). Skipped where Triton is not
installed (it is part of the test extra) and on a GPU machine."""

from __future__ import annotations

import pytest
import torch

from triton_interpreter import interpret_or_skip  # tests/ is on the path

interpret_or_skip()

from kanana_longctx.kernels import attention  # noqa: E402
from kanana_longctx.kernels.attention import merge_states  # noqa: E402
from kanana_longctx.kernels.merge import merge_tiles_into  # noqa: E402
from test_kernels_attention import tiled_error_against_float64  # noqa: E402  (tests/ is on the path)


def _rel(a, b):
    return float((a.double() - b.double()).norm() / b.double().norm())


@pytest.mark.parametrize("q_start, end, j0, m", [(40, 101, 1, 3), (32, 112, 0, 5), (47, 48, 0, 2), (33, 100, 4, 1)])
def test_merged_tiles_land_on_their_rows_and_nowhere_else(q_start, end, j0, m):
    """Tiles j0 .. j0+m-1 of a call whose 5 padded tiles of 16 start at position 32: each real row is the merge of
    its rectangle and its square; padded rows, and rows of tiles outside the group, stay as they were."""
    gen = torch.Generator().manual_seed(q_start + 7 * m)
    B, n, H, tile, D, first = 2, 5, 6, 16, 32, 32
    o_rect = torch.randn(B, m, H, tile, D, generator=gen)
    lse_rect = 3 * torch.randn(B, m, H, tile, generator=gen)
    o_sq = torch.randn(B, n, H, tile, D, generator=gen)
    lse_sq = 3 * torch.randn(B, n, H, tile, generator=gen)
    T = end - q_start
    out = torch.full((B, T, H, D), float("nan"))
    merge_tiles_into(out, o_rect, lse_rect, o_sq, lse_sq, j0=j0, first=first, q_start=q_start)
    expected = torch.full_like(out, float("nan"))
    for jj in range(m):
        t0 = first + (j0 + jj) * tile
        a, b = max(q_start, t0), min(end, t0 + tile)
        if a >= b:
            continue
        merged = merge_states(o_rect[:, jj], lse_rect[:, jj], o_sq[:, j0 + jj], lse_sq[:, j0 + jj])
        expected[:, a - q_start : b - q_start] = merged[:, :, a - t0 : b - t0].transpose(1, 2)
    assert torch.equal(out.isnan(), expected.isnan())
    written = ~expected.isnan()
    assert written.any()
    assert _rel(out[written], expected[written]) < 1e-6


@pytest.mark.parametrize("q_start,q_len", [(0, 120), (37, 90), (20, 30), (5, 150)])
def test_tiled_attention_on_the_batched_merge_matches_float64(q_start, q_len, monkeypatch):
    """attend_tiles with its merges batched (groups of 3 tiles, so groups end inside a call and at its end), as it
    runs on CUDA, against plain float64 attention: padded rows, the first tile at position 0, stale keys."""
    monkeypatch.setattr(attention, "tiles_merge_available", lambda out, o_sq: True)
    monkeypatch.setattr(attention, "TILE_GROUP", 3)
    assert tiled_error_against_float64(q_start, q_len, 16) < 1e-5
