"""The Triton split-KV decode kernels (kernels.decode_triton) on the CPU, through Triton's interpreter: their
bounds, empty splits, parked rows and the merge against float64 attention, and the graph decoder on them decoding
like generate. Float32 only: the interpreter's bfloat16 matmul is not exact (bfloat16 is checked on the GPU, in
test_gpu.py). Skipped where Triton is not installed (it is part of the test extra) and on a GPU machine."""

from __future__ import annotations

import pytest
import torch

from triton_interpreter import interpret_or_skip  # tests/ is on the path

interpret_or_skip()

from kanana_longctx.kernels import decode_triton  # noqa: E402
from kanana_longctx.kernels.attention import reference_attention_with_lse  # noqa: E402


def _reference(q, k, v, live, scale):
    return torch.cat([
        reference_attention_with_lse(q[r : r + 1].double(), k[r : r + 1, :, :n].double(), v[r : r + 1, :, :n].double(),
                                     causal=False, scale=scale)[0]
        for r, n in enumerate(live.tolist())
    ])


@pytest.mark.parametrize(
    "groups, head_dim, splits, span, live",
    [
        (7, 128, 4, 170, [650, 1, 130]),  # the 2.1B shape's groups; a parked row; row 2 past its first split
        (3, 64, 8, 90, [700, 699, 2]),  # SmolLM2's layout; splits of a ragged last block
        (1, 64, 2, 400, [5, 300, 800]),  # one query head per kv head; the whole buffer live
        (4, 128, 1, 800, [800, 17, 64]),  # one split
    ],
)
def test_split_attention_matches_float64(groups, head_dim, splits, span, live):
    gen = torch.Generator().manual_seed(groups * splits)
    rows, kv_heads, capacity = 3, 2, 800
    q = torch.randn(rows, kv_heads, groups, head_dim, generator=gen)
    k, v = (torch.randn(rows, kv_heads, capacity, head_dim, generator=gen) for _ in range(2))
    live = torch.tensor(live)
    out = decode_triton.triton_split_attention(q, k, v, live, torch.tensor(span), splits=splits, scale=0.09)
    assert out.shape == q.shape and out.dtype == q.dtype
    assert float((out.double() - _reference(q, k, v, live, 0.09)).norm() / _reference(q, k, v, live, 0.09).norm()) < 1e-6


def test_keys_beyond_the_live_ones_are_never_read():
    """NaN in every position past a row's live keys (and in the keys' padding of the last block) cannot reach the
    output: the kernel masks its loads, not just its scores."""
    gen = torch.Generator().manual_seed(1)
    q = torch.randn(2, 2, 4, 64, generator=gen)
    k, v = (torch.randn(2, 2, 512, 64, generator=gen) for _ in range(2))
    live = torch.tensor([100, 333])
    for cache in (k, v):
        cache[0, :, 100:] = float("nan")
        cache[1, :, 333:] = float("nan")
    out = decode_triton.triton_split_attention(q, k, v, live, torch.tensor(128), splits=4, scale=0.125)
    ref = _reference(q, k, v, live, 0.125)
    assert not out.isnan().any()
    assert float((out.double() - ref).norm() / ref.norm()) < 1e-6


@pytest.mark.parametrize("fused", [False, True])
def test_graph_decoder_on_the_triton_kernels_decodes_like_generate(sharp_tiny, fused):
    """Rows at different positions step together on the Triton attention, on a model whose attention is peaked
    enough for each row's own positions and keys to matter."""
    from kanana_longctx.fastpath.decode import GraphDecoder
    from kanana_longctx.fastpath.llama import PrefixReusingLlama

    model, loaded = sharp_tiny
    probes = [torch.randint(0, 1000, (n,), generator=torch.Generator().manual_seed(n)) for n in (150, 130, 90)]
    with torch.no_grad():
        refs = [model.generate(p[None], max_new_tokens=7, do_sample=False)[0, len(p) :].tolist() for p in probes]
    fast = PrefixReusingLlama(loaded, max_tokens=200, rows=4)
    firsts = [fast.prefill(p, 0, row=r) for r, p in enumerate(probes)]
    decoder = GraphDecoder(fast.parts, fast.kv, splits=4, triton=True, layers=fast.fused if fused else None)
    assert decoder.triton and decoder.layout.splits == 4
    outs = decoder.generate_rows(
        [(r, first.argmax().item(), len(p), lambda out: False) for r, (first, p) in enumerate(zip(firsts, probes))], 7
    )
    assert outs == refs


def test_a_strided_query_is_made_contiguous_and_a_strided_cache_refused():
    gen = torch.Generator().manual_seed(2)
    q = torch.randn(2, 4, 3, 64, generator=gen).transpose(1, 2)  # (2, 3 kv heads, 4 groups, 64), not contiguous
    k, v = (torch.randn(2, 3, 300, 64, generator=gen) for _ in range(2))
    live = torch.tensor([300, 40])
    out = decode_triton.triton_split_attention(q, k, v, live, torch.tensor(150), splits=2, scale=0.125)
    ref = _reference(q.contiguous(), k, v, live, 0.125)
    assert float((out.double() - ref).norm() / ref.norm()) < 1e-6
    with pytest.raises(ValueError, match="contiguous"):
        decode_triton.triton_split_attention(q, k.transpose(2, 3).contiguous().transpose(2, 3), v, live,
                                             torch.tensor(150), splits=2, scale=0.125)
