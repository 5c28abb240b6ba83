"""The decode step's split-KV attention, masked and over live keys only, against one masked SDPA call (CPU
reference; the GPU kernel in test_gpu.py)."""

from __future__ import annotations

import torch


def _rel(a, b) -> float:
    return float((a.double() - b.double()).norm() / b.double().norm())


def test_split_kv_attention_equals_one_masked_call():
    """Split-KV decode attention against plain masked attention: rows of different live lengths, a split with no
    live key at all, and a parked row whose only live key is far out."""
    from kanana_longctx.kernels.split_kv import split_kv_attention

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
    from kanana_longctx.kernels import choice
    from kanana_longctx.kernels.split_kv import SplitLayout, split_kv_attention_varlen, split_lengths

    assert split_lengths(torch.tensor([50, 3, 64]), splits=8, span=8).tolist() == [
        [8, 8, 8, 8, 8, 8, 2, 0], [3, 0, 0, 0, 0, 0, 0, 0], [8] * 8,
    ]
    assert split_lengths(torch.tensor([50, 3]), splits=4, span=torch.tensor(20)).tolist() == [[20, 20, 10, 0], [3, 0, 0, 0]]
    monkeypatch.setattr(choice, "SPLIT_MIN_KEYS", 4)
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
