"""The kernel halves' Triton kernels on the CPU, through Triton's interpreter, against the torch arithmetic of the
eager halves (fastpath.layers): RoPE in place (kernels.rope: q and k heads rotated, v heads and every other byte
untouched), RMSNorm and SiLU(gate) * up (kernels.pointwise), for sizes that do not fill the kernels' blocks.
Float32 only (the interpreter's bfloat16 is not exact; test_gpu.py checks the compiled kernels in bf16 against
the compiled halves)."""

from __future__ import annotations

import pytest
import torch

from triton_interpreter import interpret_or_skip  # tests/ is on the path

interpret_or_skip()

import torch.nn.functional as F  # noqa: E402

from kanana_longctx.fastpath.layers import rms_norm as torch_rms_norm  # noqa: E402
from kanana_longctx.fastpath.layers import rotate_half, split_heads  # noqa: E402
from kanana_longctx.kernels.pointwise import rms_norm, silu_mul  # noqa: E402
from kanana_longctx.kernels.rope import rope_in_place  # noqa: E402


def _tables(positions, head_dim, base=10000.0):
    inv = 1.0 / base ** (torch.arange(0, head_dim, 2, dtype=torch.float64) / head_dim)
    angles = positions.double()[:, None] * inv[None, :]
    emb = torch.cat([angles, angles], dim=-1)
    return emb.cos().float()[None, None], emb.sin().float()[None, None]  # (1, 1, T, head_dim)


@pytest.mark.parametrize("T, heads, kv, head_dim", [(1, 4, 2, 16), (37, 7, 1, 32), (16, 6, 2, 8), (50, 5, 5, 64)])
def test_rope_in_place_rotates_q_and_k_heads_only(T, heads, kv, head_dim):
    gen = torch.Generator().manual_seed(T * 131 + heads)
    width = (heads + 2 * kv) * head_dim
    qkv = torch.randn(1, T, width + 3, generator=gen)[..., :width]  # a row stride wider than the row
    backing = qkv._base.clone()
    cos, sin = _tables(torch.arange(1000, 1000 + T) * 3, head_dim)
    q, k, v = (t.clone() for t in split_heads(qkv, heads, kv, head_dim))
    want_q = q * cos + rotate_half(q) * sin
    want_k = k * cos + rotate_half(k) * sin

    rope_in_place(qkv, cos, sin, rotated_heads=heads + kv, head_dim=head_dim)

    got_q, got_k, got_v = split_heads(qkv, heads, kv, head_dim)
    torch.testing.assert_close(got_q, want_q, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(got_k, want_k, rtol=1e-5, atol=1e-5)
    assert torch.equal(got_v, v)
    assert torch.equal(qkv._base[..., width:], backing[..., width:])  # the padding past each row is untouched


def test_rope_in_place_refuses_a_batched_input():
    with pytest.raises(ValueError, match="1, T, width"):
        rope_in_place(torch.zeros(2, 4, 48), torch.zeros(1, 1, 4, 16), torch.zeros(1, 1, 4, 16), rotated_heads=2,
                      head_dim=16)


@pytest.mark.parametrize("rows, n", [(1, 64), (5, 576), (3, 100)])
def test_rms_norm_kernel_equals_the_eager_norm(rows, n):
    gen = torch.Generator().manual_seed(rows * n)
    x = 3 * torch.randn(rows, n, generator=gen)
    weight = torch.rand(n, generator=gen) + 0.5
    torch.testing.assert_close(rms_norm(x, weight, 1e-5), torch_rms_norm(x, weight, 1e-5), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("rows, ffn", [(1, 16), (4, 1536), (3, 1100)])
def test_silu_mul_kernel_gates_the_second_half_by_the_first(rows, ffn):
    gen = torch.Generator().manual_seed(rows + ffn)
    gate_up = 4 * torch.randn(rows, 2 * ffn, generator=gen)
    gate, up = gate_up.split([ffn, ffn], dim=-1)
    torch.testing.assert_close(silu_mul(gate_up, ffn), F.silu(gate) * up, rtol=1e-5, atol=1e-5)


def test_pointwise_kernels_refuse_rows_they_would_misread():
    with pytest.raises(ValueError, match="contiguous"):
        rms_norm(torch.zeros(4, 8).t(), torch.ones(4), 1e-5)
    with pytest.raises(ValueError, match="gate-up"):
        silu_mul(torch.zeros(2, 10), 4)
