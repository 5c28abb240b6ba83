"""GPU-only checks of the fast path's CUDA kernels (split cuDNN attention, CUDA-graph decode). Skipped without CUDA;
the same logic runs on CPU in test_kernels_*.py and test_fastpath_*.py."""

from __future__ import annotations

import pytest
import torch

from kanana_longctx.kernels.attention import attend, reference_attention_with_lse

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")]


def _rel(a, b) -> float:
    return float((a.double() - b.double()).norm() / b.double().norm())


@pytest.mark.parametrize("kernel", ["cudnn", "fa2", "sdpa"])
@pytest.mark.parametrize("q_len,prefix", [(256, 768), (1, 1000), (512, 0)])
def test_split_attention_matches_float32_reference(kernel, q_len, prefix):
    gen = torch.Generator(device="cuda").manual_seed(q_len + prefix)
    q = torch.randn(1, 32, q_len, 128, device="cuda", dtype=torch.bfloat16, generator=gen)
    k = torch.randn(1, 8, prefix + q_len, 128, device="cuda", dtype=torch.bfloat16, generator=gen)
    v = torch.randn(1, 8, prefix + q_len, 128, device="cuda", dtype=torch.bfloat16, generator=gen)
    ref, _ = reference_attention_with_lse(
        q.float(), k.float().repeat_interleave(4, 1), v.float().repeat_interleave(4, 1), causal=True, scale=128**-0.5
    )
    out = attend(q, k, v, q_start=prefix, kernel=kernel, scale=128**-0.5)
    assert _rel(out, ref) < 1e-2  # bf16 operands


def test_graph_decode_and_reused_prefix_match_transformers_on_cuda():
    from kanana_longctx.bench.models import random_model
    from kanana_longctx.backends.local import finish_loaded
    from kanana_longctx.fastpath.llama import PrefixReusingLlama

    model = random_model("tiny", device="cuda", dtype="float32", yarn=True)
    loaded = finish_loaded(model, "cuda", "float32", "sdpa", {"factor": 4.4, "original_max_position_embeddings": 4096})
    ids = torch.randint(0, 1000, (600,), device="cuda", generator=torch.Generator(device="cuda").manual_seed(0))
    with torch.inference_mode():
        ref_logits = model(ids[None]).logits[0, -1]
        ref_tokens = model.generate(ids[None], max_new_tokens=8, do_sample=False)[0, 600:].tolist()
    fast = PrefixReusingLlama(loaded, max_tokens=5000, chunk_tokens=256)
    fast.prefill(ids, 0)
    logits = fast.prefill(ids[300:], 300)  # reuse the first 300 positions
    assert _rel(logits, ref_logits) < 1e-4
    assert fast.decode_rows([(0, logits, 600, lambda out: False)], 8)[0] == ref_tokens  # CUDA-graph replay


def test_fused_merge_matches_the_torch_merge():
    from kanana_longctx.kernels import merge as merge_kernel
    from kanana_longctx.kernels.attention import merge_states

    gen = torch.Generator(device="cuda").manual_seed(7)
    o1, o2 = (torch.randn(1, 32, 1000, 128, device="cuda", generator=gen).bfloat16() for _ in range(2))
    l1, l2 = (10 * torch.randn(1, 32, 1000, device="cuda", generator=gen) for _ in range(2))
    assert merge_kernel.fused_merge_available(o1, o2)
    fused = merge_kernel.fused_merge(o1, l1, o2, l2)
    w1, w2 = torch.sigmoid(l1 - l2).unsqueeze(-1), torch.sigmoid(l2 - l1).unsqueeze(-1)
    ref = o1.double() * w1.double() + o2.double() * w2.double()
    assert _rel(fused, ref) < 4e-3  # bf16 output rounding
    assert _rel(fused.cpu(), merge_states(o1.cpu(), l1.cpu(), o2.cpu(), l2.cpu())) < 4e-3


@pytest.mark.parametrize("q_start,q_len", [(0, 3000), (1500, 700), (4095, 1), (777, 5000), (30000, 40)])
def test_cudnn_tiles_match_float32_reference(q_start, q_len):
    from kanana_longctx.kernels.attention import attend_tiles

    gen = torch.Generator(device="cuda").manual_seed(q_start + q_len)
    end = q_start + q_len
    n = end + (-end % 1024)
    q = torch.randn(1, q_len, 32, 128, device="cuda", dtype=torch.bfloat16, generator=gen).transpose(1, 2)
    k = torch.randn(1, 8, n, 128, device="cuda", dtype=torch.bfloat16, generator=gen)
    v = torch.randn(1, 8, n, 128, device="cuda", dtype=torch.bfloat16, generator=gen)
    ref, _ = reference_attention_with_lse(
        q.float(), k[:, :, :end].float().repeat_interleave(4, 1), v[:, :, :end].float().repeat_interleave(4, 1),
        causal=True, scale=128**-0.5,
    )
    out = attend_tiles(q, k, v, q_start=q_start, tile=1024, kernel="cudnn", scale=128**-0.5)
    assert _rel(out, ref) < 1e-2  # bf16 operands


@pytest.mark.parametrize("q_start,q_len", [(1500, 11000), (8192, 9000)])
def test_batched_tile_merges_equal_one_merge_per_tile(q_start, q_len, monkeypatch):
    """Merges batched into one launch (merge.merge_tiles_into, groups of TILE_GROUP) give what one merge and one
    copy per tile give: the same float32 arithmetic, up to bf16 rounding where the per-tile path runs torch's merge
    (two rows make its tiles strided). Two rows, the 2.1B head layout, groups ending inside the call."""
    from kanana_longctx.kernels import attention

    gen = torch.Generator(device="cuda").manual_seed(q_len)
    end = q_start + q_len
    n = end + (-end % 1024)
    q = torch.randn(2, q_len, 28, 128, device="cuda", dtype=torch.bfloat16, generator=gen).transpose(1, 2)
    k, v = (torch.randn(2, 4, n, 128, device="cuda", dtype=torch.bfloat16, generator=gen) for _ in range(2))
    batched = attention.attend_tiles(q, k, v, q_start=q_start, tile=1024, kernel="cudnn", scale=128**-0.5)
    monkeypatch.setattr(attention, "tiles_merge_available", lambda out, o_sq: False)
    per_tile = attention.attend_tiles(q, k, v, q_start=q_start, tile=1024, kernel="cudnn", scale=128**-0.5)
    assert _rel(batched, per_tile) < 2e-3  # a misplaced or unmerged row would be off by about 1


@pytest.mark.parametrize("heads,kv_heads,q_start,q_len", [(28, 4, 1500, 11000), (32, 8, 0, 9000), (9, 3, 700, 2500)])
def test_squares_on_grouped_heads_equal_repeated_heads(heads, kv_heads, q_start, q_len, monkeypatch):
    """The tiles' causal squares read the grouped K/V heads in place from the buffer where cuDNN proves it can
    (attention._grouped_squares_work): the same attention as with the heads repeated, for the 2.1B, 8B and SmolLM2
    head layouts, with groups of squares ending inside the call."""
    from kanana_longctx.kernels import attention

    d = 128 if heads != 9 else 64
    assert attention._grouped_squares_work(torch.cuda.current_device(), d, torch.bfloat16)
    gen = torch.Generator(device="cuda").manual_seed(q_len)
    end = q_start + q_len
    n = end + (-end % 1024)
    q = torch.randn(1, q_len, heads, d, device="cuda", dtype=torch.bfloat16, generator=gen).transpose(1, 2)
    k, v = (torch.randn(1, kv_heads, n, d, device="cuda", dtype=torch.bfloat16, generator=gen) for _ in range(2))
    grouped = attention.attend_tiles(q, k, v, q_start=q_start, tile=1024, kernel="cudnn", scale=d**-0.5)
    monkeypatch.setattr(attention, "_squares_read_grouped_heads", lambda *a: False)
    repeated = attention.attend_tiles(q, k, v, q_start=q_start, tile=1024, kernel="cudnn", scale=d**-0.5)
    assert _rel(grouped, repeated) < 2e-3  # a wrong head or tile would be off by about 1


@pytest.mark.parametrize("mode, buffer", [("default", 8192), ("default", 1300), ("varlen", 8192), ("masked", 1300)])
def test_batched_graph_decode_matches_transformers_per_probe(mode, buffer):
    """All rows step together, one CUDA graph replay per step, and each equals its own generate: on the default
    Triton split-KV kernels (live keys; splits from `triton_split_count`, cut to the batch), on the memory-efficient
    kernel's variable-length mode (4 rows x 2 kv heads x 8 splits: the most blocks whose splits keep >= 1024 keys),
    and masked (one fused call over the capacity). The step runs on the engine's fused layer halves."""
    from kanana_longctx.bench.models import random_model
    from kanana_longctx.backends.local import finish_loaded
    from kanana_longctx.fastpath.decode import GraphDecoder
    from kanana_longctx.fastpath.llama import PrefixReusingLlama
    from kanana_longctx.kernels.choice import triton_split_count

    model = random_model("tiny", device="cuda", dtype="float32", yarn=True)
    loaded = finish_loaded(model, "cuda", "float32", "sdpa", {"factor": 4.4, "original_max_position_embeddings": 4096})
    gen = torch.Generator(device="cuda").manual_seed(1)
    probes = [torch.randint(0, 1000, (n,), device="cuda", generator=gen) for n in (700, 300, 1200)]
    with torch.inference_mode():
        refs = [model.generate(p[None], max_new_tokens=6, do_sample=False)[0, len(p):].tolist() for p in probes]
    fast = PrefixReusingLlama(loaded, max_tokens=buffer, rows=4)
    if mode != "default":
        fast._graph_decoder = GraphDecoder(fast.parts, fast.kv, varlen=mode == "varlen", layers=fast.fused)
    requests = [(row, fast.prefill(p, 0, row=row), len(p), lambda out: False) for row, p in enumerate(probes)]
    assert fast.decode_rows(requests, 6) == refs
    decoder = fast._graph_decoder
    sms = torch.cuda.get_device_properties(0).multi_processor_count
    expected = {"default": triton_split_count(4, 2, fast.kv.capacity, sms), "varlen": 8, "masked": 1}[mode]
    assert decoder.triton == (mode == "default") and decoder.layers is fast.fused
    assert decoder.splits(decoder.bucket(1206)) == expected
    assert (decoder.layout is None) == (mode == "masked")


@pytest.mark.parametrize("halves", ["kernels", "compiled"])
def test_compiled_fused_layers_match_the_module_path_in_bf16(halves, monkeypatch):
    """The prefill on CUDA with fused weights and the kernel halves (the default) or the compiled ones against
    transformers' modules through the same attention, at several suffix lengths over a cached prefix."""
    from kanana_longctx.bench.models import random_model
    from kanana_longctx.backends.local import finish_loaded
    from kanana_longctx.kernels.choice import LAYER_KERNELS_ENV
    from kanana_longctx.fastpath.llama import PrefixReusingLlama

    monkeypatch.setenv(LAYER_KERNELS_ENV, "1" if halves == "kernels" else "0")

    model = random_model("tiny", device="cuda", dtype="bfloat16", yarn=True)
    loaded = finish_loaded(model, "cuda", "bfloat16", "sdpa", {"factor": 4.4, "original_max_position_embeddings": 4096})
    plain = PrefixReusingLlama(loaded, max_tokens=3000, chunk_tokens=1024, fuse_layers=False)
    fused = PrefixReusingLlama(loaded, max_tokens=3000, chunk_tokens=1024)
    assert fused.fused is not None and (fused.fused.kernels if halves == "kernels" else fused.fused.compiled)
    ids = torch.randint(0, 1000, (2500,), device="cuda", generator=torch.Generator(device="cuda").manual_seed(3))
    plain.prefill(ids, 0)
    fused.prefill(ids, 0)
    for start in (1700, 2100, 2490):
        a, b = fused.prefill(ids[start:], start), plain.prefill(ids[start:], start)
        assert _rel(a, b) < 2e-2  # bf16: the compiled chains round once, the modules after every op


def _row_errors(got, truth):
    """Relative error of each token's values (rows of the last two dimensions' tokens) against a float32 truth."""
    got, truth = got.float().transpose(-3, -2).flatten(-2), truth.transpose(-3, -2).flatten(-2)  # (..., T, values)
    return (got - truth).norm(dim=-1) / truth.norm(dim=-1)


@pytest.mark.parametrize("heads, kv_heads, hidden, ffn", [(28, 4, 1792, 8064), (9, 3, 576, 1536)])
def test_kernel_halves_are_as_close_to_float32_as_the_other_halves(heads, kv_heads, hidden, ffn):
    """The kernel halves (kernels.pointwise, kernels.rope, residual adds in the matmuls) in bf16 against the eager
    halves in float32 on the same inputs, for the 2.1B and SmolLM2 layouts and token counts that do not fill the
    kernels' blocks. bf16 halves round differently (the kernels and transformers normalise the rounded residual,
    compiled code the unrounded sum; eager code rounds after every op), so outputs may differ by an ulp; what is
    checked is that no token's values are off (a misplaced or misread row is off by its whole size) and that the
    kernels' error is no larger than the compiled or the eager bf16 halves'."""
    from kanana_longctx.fastpath import layers as L

    gen = torch.Generator(device="cuda").manual_seed(heads)
    d = 128 if hidden > 1000 else 64
    bf = dict(device="cuda", dtype=torch.bfloat16)

    def weight(*shape):
        return torch.randn(*shape, generator=gen, **bf) * 0.02

    def f32(args):
        return [a.float() if torch.is_tensor(a) else a for a in args]

    w_qkv, w_o, w_gu, w_down = weight((heads + 2 * kv_heads) * d, hidden), weight(hidden, heads * d), weight(2 * ffn, hidden), weight(hidden, ffn)
    norm = torch.rand(hidden, generator=gen, **bf) + 0.5
    pre, post = torch.compile(L.pre_attention, dynamic=True), torch.compile(L.post_attention, dynamic=True)
    for T in (1, 97, 3001):
        x = torch.randn(1, T, hidden, generator=gen, **bf)
        angles = torch.arange(7000, 7000 + T, device="cuda")[:, None] / 10000 ** (torch.arange(0, d, 2, device="cuda") / d)
        emb = torch.cat([angles, angles], -1)
        cos, sin = emb.cos().bfloat16()[None, None], emb.sin().bfloat16()[None, None]
        o = torch.randn(1, T, heads * d, generator=gen, **bf)
        pre_args = (x, norm, 1e-5, w_qkv, None, None, None, cos, sin, heads, kv_heads, d)
        post_args = (x, o, w_o, None, norm, 1e-5, w_gu, None, w_down, None, ffn)
        checks = [*zip(L.kernel_pre_attention(*pre_args), pre(*pre_args), L.pre_attention(*pre_args),
                       L.pre_attention(*f32(pre_args)))]
        posts = (L.kernel_post_attention(*post_args), post(*post_args), L.post_attention(*post_args),
                 L.post_attention(*f32(post_args)))
        checks.append(tuple(t[None] for t in posts))  # (1, 1, T, hidden): one "head" of the whole width
        for got, compiled, eager, truth in checks:
            mine = _row_errors(got, truth)
            theirs = max(float(_row_errors(compiled, truth).mean()), float(_row_errors(eager, truth).mean()))
            assert float(mine.max()) < 1.5e-2, (T, float(mine.max()))  # bf16 rounding is ~3e-3 a token
            assert float(mine.mean()) <= 1.25 * theirs + 1e-3, (T, float(mine.mean()), theirs)


def test_joined_suffixes_with_cudnn_tiles_match_each_probe_alone_in_bf16():
    """The GPU default for a batch of probes: compiled layers, cuDNN tiles, short suffixes joined in one forward
    (`prefill_rows`), the trimmed last layer. Each probe's logits against its own untrimmed forward in its row."""
    from kanana_longctx.bench.models import random_model
    from kanana_longctx.backends.local import finish_loaded
    from kanana_longctx.fastpath.llama import PrefixReusingLlama

    model = random_model("tiny", device="cuda", dtype="bfloat16", yarn=True)
    loaded = finish_loaded(model, "cuda", "bfloat16", "cudnn", {"factor": 4.4, "original_max_position_embeddings": 4096})
    gen = torch.Generator(device="cuda").manual_seed(4)
    base = torch.randint(0, 1000, (3000,), device="cuda", generator=gen)
    starts = (2900, 1500, 1024, 0)
    probes = [torch.cat([base[:s], torch.randint(0, 1000, (n,), device="cuda", generator=gen)]) for s, n in zip(starts, (90, 700, 1, 300))]
    joined = PrefixReusingLlama(loaded, max_tokens=4096, rows=4)
    alone = PrefixReusingLlama(loaded, max_tokens=4096, rows=1, trim_last_layer=False)
    assert joined.tile_tokens and joined.trim_last_layer
    joined.prefill(base, 0)
    for row, s in enumerate(starts[1:], 1):
        joined.kv.copy_prefix(0, row, 0, s)
    outs = joined.prefill_rows([(p[s:], s, row) for row, (p, s) in enumerate(zip(probes, starts))])
    for p, out in zip(probes, outs):
        ref = alone.prefill(p, 0)
        assert _rel(out, ref) < 2e-2


def test_decode_reads_live_keys_only_on_this_gpu():
    """The kernel's variable-length mode passes the decoder's own check here (else decoding silently falls back to
    masking, which reads whole capacity buckets: correct, but slower)."""
    from kanana_longctx.fastpath.decode import varlen_works

    assert varlen_works(torch.device("cuda")) == (True, "")


def test_triton_decode_kernel_passes_its_check_and_is_the_default():
    """The Triton split-KV kernels pass the decoder's check here, and a decoder left to choose runs them (else
    decoding falls back to the memory-efficient kernel: correct, but slower)."""
    from kanana_longctx.fastpath.decode import GraphDecoder, split_mode_works
    from kanana_longctx.fastpath.kv import KVBuffer
    from kanana_longctx.fastpath.layers import ModelParts
    from kanana_longctx.bench.models import random_model

    assert split_mode_works(torch.device("cuda"), "triton") == (True, "")
    model = random_model("tiny", device="cuda", dtype="bfloat16", yarn=False)
    parts = ModelParts.of(model)
    kv = KVBuffer(parts.dims, rows=2, capacity=4096, dtype=torch.bfloat16, device=torch.device("cuda"))
    decoder = GraphDecoder(parts, kv)
    assert decoder.triton and decoder.fallback_note == ""


@pytest.mark.parametrize("dtype, tolerance", [(torch.float32, 1e-5), (torch.bfloat16, 1e-2)])
@pytest.mark.parametrize("rows, kv_heads, groups, head_dim", [(8, 3, 3, 64), (8, 8, 4, 128), (8, 4, 7, 128)])
def test_triton_decode_kernel_matches_float64_attention(rows, kv_heads, groups, head_dim, dtype, tolerance):
    """The Triton decode attention, SmolLM2's, an 8B model's and the 2.1B shape's head layouts: rows of very
    different lengths, three parked rows with one live key, splits without any live key, junk in freed memory;
    float32 matches float64 to rounding (no TF32), bfloat16 to its precision."""
    from kanana_longctx.kernels.choice import TRITON_SPLIT_MIN_KEYS, triton_split_count
    from kanana_longctx.kernels.decode_triton import triton_split_attention
    from kanana_longctx.kernels.split_kv import SplitLayout

    gen = torch.Generator(device="cuda").manual_seed(0)
    n = 17408
    q, k, v = (torch.randn(rows, kv_heads, length, head_dim, device="cuda", generator=gen).to(dtype)
               for length in (groups, n, n))
    live = torch.tensor([1030, 2050, 4100, 8200, 16400, 1, 1, 1], device="cuda")
    splits = triton_split_count(rows, kv_heads, n, 132)
    layout = SplitLayout(rows, kv_heads, groups, n, splits, q.device, min_keys=TRITON_SPLIT_MIN_KEYS)
    layout.fit(16423)
    for _ in range(4):
        torch.full((1 << 16,), 1e4, device="cuda")
    got = triton_split_attention(q, k, v, live, layout.span, splits=splits, scale=0.125)
    assert got.dtype == dtype and got.shape == q.shape
    for r, length in enumerate(live.tolist()):
        ref, _ = reference_attention_with_lse(
            q[r : r + 1].double(), k[r : r + 1, :, :length].double(), v[r : r + 1, :, :length].double(),
            causal=False, scale=0.125,
        )
        assert _rel(got[r : r + 1], ref) < tolerance, f"row {r} ({length} live keys)"


def test_memory_cached_by_an_earlier_run_counts_as_free():
    """A block freed back to PyTorch's caching allocator is still taken for the driver; the runner's memory
    budget (decode rows, batch sizes) counts it as free, so a second run in one process sizes like the first."""
    from kanana_longctx.backends.gpu import free_gpu_bytes

    torch.cuda.empty_cache()
    before = free_gpu_bytes()
    block = torch.empty(2 << 30, dtype=torch.uint8, device="cuda")
    assert free_gpu_bytes() < before - (1 << 30)
    del block  # back to the allocator's cache, not to the driver
    assert torch.cuda.memory_reserved() >= 2 << 30
    assert abs(free_gpu_bytes() - before) < 256 << 20


@pytest.mark.parametrize("rows, kv_heads, groups, head_dim", [(8, 3, 3, 64), (8, 8, 4, 128)])
def test_live_key_splits_match_float64_attention_with_junk_in_freed_memory(rows, kv_heads, groups, head_dim):
    """The decode step's attention on the GPU kernel, SmolLM2's and an 8B model's head layouts: rows of very
    different lengths, three parked rows with one live key, many splits without any live key. The kernel writes
    nothing for those, so junk is left in freed memory first; float32 must match float64 to rounding. The masked
    fallback (a -inf bias over 16 splits of the buffer) too."""
    from kanana_longctx.kernels.choice import live_split_count
    from kanana_longctx.kernels.split_kv import SplitLayout, mask_bias, split_kv_attention, split_kv_attention_varlen

    gen = torch.Generator(device="cuda").manual_seed(0)
    n = 17408
    q, k, v = (torch.randn(rows, kv_heads, length, head_dim, device="cuda", generator=gen) for length in (groups, n, n))
    live = torch.tensor([1030, 2050, 4100, 8200, 16400, 1, 1, 1], device="cuda")
    layout = SplitLayout(rows, kv_heads, groups, n, live_split_count(rows, kv_heads, n, 132), q.device)
    layout.fit(16423)
    for _ in range(4):
        torch.full((1 << 16,), 1e4, device="cuda")
    got = split_kv_attention_varlen(q, k, v, layout.seqlen_k(live), layout, scale=0.125)
    mask = torch.arange(n, device="cuda")[None] < live[:, None]
    bias = mask_bias(mask, rows, kv_heads, 16, groups, q.dtype)
    masked = split_kv_attention(q, k, v, bias, capacity=n, splits=16, scale=0.125)
    for r, length in enumerate(live.tolist()):
        ref, _ = reference_attention_with_lse(
            q[r : r + 1].double(), k[r : r + 1, :, :length].double(), v[r : r + 1, :, :length].double(),
            causal=False, scale=0.125,
        )
        assert _rel(got[r : r + 1], ref) < 1e-5, f"live keys, row {r} ({length} live keys)"
        assert _rel(masked[r : r + 1], ref) < 1e-5, f"masked, row {r} ({length} live keys)"


@pytest.mark.parametrize("name", ["tiny-moe", "tiny-mla", "tiny-hybrid"])
@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_reuse_on_cuda_gives_the_full_forwards_logits(name, dtype):
    """The reuse engine's suffix over a cached prefix on the GPU kernels (bottom-right causal SDPA) against one
    full forward of transformers' own."""
    from kanana_longctx.backends.hfcache import PrefixCache
    from kanana_longctx.bench.models import random_model
    from kanana_longctx.kernels.hf_prefix import prefix_attention

    model = random_model(name, device="cuda", dtype=dtype, yarn=False)
    ids = torch.randint(0, 1000, (600,), device="cuda", generator=torch.Generator(device="cuda").manual_seed(1))
    with torch.inference_mode():
        ref = model(ids[None]).logits[0, -1].float()
        with prefix_attention(model):
            cache = PrefixCache(model, chunk_tokens=256)
            cache.extend(ids.tolist(), 0)
            logits = cache.extend(ids[300:].tolist(), 300, want_logits=True)
    assert _rel(logits, ref) < (1e-4 if dtype == "float32" else 5e-2)


@pytest.mark.parametrize("name", ["tiny-moe", "tiny-mla", "tiny-hybrid"])
def test_reuse_decoding_group_on_cuda_matches_each_prompt_alone(name):
    """Prompts of different lengths decoded together on the GPU (left padding masked, the shorter ones past the
    hybrid's window) give each prompt's own greedy tokens, in float32, on the reuse run's decoding attention and
    backends with the cache written in place."""
    from kanana_longctx.backends.hfcache import DecodeGroup, PrefixCache
    from kanana_longctx.bench.models import random_model
    from kanana_longctx.kernels.choice import decode_sdpa_context
    from kanana_longctx.kernels.hf_prefix import model_attention, prefix_attention

    model = random_model(name, device="cuda", dtype="float32", yarn=False)
    gen = torch.Generator().manual_seed(2)
    prompts = [torch.randint(0, 1000, (n,), generator=gen).tolist() for n in (500, 170, 320)]
    never = lambda out: False  # noqa: E731
    with torch.inference_mode(), prefix_attention(model):
        group, alone = DecodeGroup(model, [len(p) for p in prompts], max_new_tokens=8), []
        for ids in prompts:
            cache = PrefixCache(model, chunk_tokens=256)
            logits = cache.extend(ids, 0, want_logits=True)
            group.add(cache, logits)
            alone.append(cache.greedy(logits, max_new_tokens=8, stop=never))
        with model_attention(model), decode_sdpa_context("cudnn", torch.device("cuda")):
            assert group.greedy(max_new_tokens=8, stop=never) == alone
