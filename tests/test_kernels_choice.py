"""Every kernel decision of kanana_longctx.kernels.choice, without a GPU: what each rule picks and where it refuses,
the run-owned cuDNN plan cache, the tile size and the decode split counts."""

from __future__ import annotations

import pytest
import torch

from kanana_longctx.errors import DeviceError
from kanana_longctx.kernels import choice
from kanana_longctx.kernels.choice import (
    CUDNN_MIN_CALL_FLOPS, CudnnPlans, choose_splits, edge_kernel, hf_attn_implementation, live_split_count, lse_op,
    pick_attention, pick_device, pick_dtype, plain_call_kernel, tile_tokens,
)


def test_device_and_dtype_defaults_and_refusals():
    assert pick_device("cpu") == "cpu"
    assert pick_device("auto") == ("cuda" if torch.cuda.is_available() else "cpu")
    with pytest.raises(DeviceError, match="unknown device 'tpu'"):
        pick_device("tpu")
    assert pick_dtype("auto", "cuda") == "bfloat16" and pick_dtype("auto", "cpu") == "float32"
    assert pick_dtype("float16", "cpu") == "float16"
    with pytest.raises(DeviceError, match="unknown dtype"):
        pick_dtype("fp8", "cuda")


def test_attention_on_cpu_and_the_explicit_choices_it_refuses():
    assert pick_attention("auto", "cpu", "float32") == "sdpa"
    assert pick_attention("eager", "cpu", "float32") == "eager"
    for kernel in ("cudnn", "fa2", "fa3"):
        with pytest.raises(DeviceError, match="needs a CUDA device"):
            pick_attention(kernel, "cpu", "bfloat16")
    with pytest.raises(DeviceError, match="unknown attention kernel"):
        pick_attention("flash", "cpu")


def test_transformers_attention_implementation_follows_the_kernel():
    assert hf_attn_implementation("eager") == "eager"
    assert hf_attn_implementation("fa3") == "flash_attention_3"
    assert hf_attn_implementation("cudnn") == hf_attn_implementation("sdpa") == "sdpa"


def test_cudnn_plans_pay_for_large_calls_and_recurring_shapes_only():
    plans = CudnnPlans()
    small = (1, 8, 64, 128)
    assert not plans.worth(small, 1000, True)  # a new small shape: FA2 takes it for free
    assert plans.worth(small, 1000, True, recurring=True)  # a tile shape: planned once per run
    assert plans.worth(small, 1000, True)  # and from then on it is planned
    big_tokens = int(CUDNN_MIN_CALL_FLOPS / (4.0 * 32 * 128 * 4096 * 0.5)) + 1
    assert plans.worth((1, 32, big_tokens, 128), 4096, True)
    assert not CudnnPlans().worth(small, 1000, True)  # another run's cache knows nothing of this one's shapes


def test_plain_calls_and_edges_leave_cudnn_where_no_plan_pays():
    q = torch.zeros(1, 8, 64, 128, dtype=torch.bfloat16)
    assert plain_call_kernel(q, 64, kernel="cudnn", plans=CudnnPlans()) == "fa2"
    assert plain_call_kernel(q[:, :, :1], 64, kernel="cudnn", plans=CudnnPlans()) == "fa2"  # one decode query
    assert plain_call_kernel(q.float(), 64, kernel="cudnn", plans=CudnnPlans()) == "sdpa"  # float32: SDPA's pick
    assert plain_call_kernel(q, 64, kernel="fa2", plans=CudnnPlans()) == "fa2"
    assert edge_kernel("cudnn") == "fa2" and edge_kernel("sdpa") == "sdpa"


def test_the_lse_op_on_cpu():
    q = torch.zeros(1, 2, 3, 8)
    expected = "flash_cpu" if choice.private_op("_scaled_dot_product_flash_attention_for_cpu") else "reference"
    assert lse_op(q, 5, causal=True, kernel="sdpa", plans=CudnnPlans()) == expected
    assert lse_op(q, 5, causal=True, kernel="eager", plans=CudnnPlans()) == "reference"


def test_tiles_only_for_cudnn_on_cuda(monkeypatch):
    monkeypatch.delenv(choice.TILE_ENV, raising=False)
    assert tile_tokens("cudnn", "cuda") == choice.CUDNN_TILE_TOKENS == 1024
    assert tile_tokens("fa2", "cuda") == tile_tokens("cudnn", "cpu") == tile_tokens("sdpa", "cpu") == 0
    monkeypatch.setenv(choice.TILE_ENV, "2048")  # the experiment knob of docs/performance.md
    assert tile_tokens("cudnn", "cuda") == 2048 and tile_tokens("fa2", "cuda") == 0
    for junk in ("", "abc", "-5", "16"):  # not a tile: the default
        monkeypatch.setenv(choice.TILE_ENV, junk)
        assert tile_tokens("cudnn", "cuda") == 1024


def test_triton_decode_splits_give_at_least_four_programs_an_sm():
    from kanana_longctx.kernels.choice import TRITON_SPLIT_MIN_KEYS, triton_split_count

    assert triton_split_count(8, 4, 33792, 132) == 32  # the 2.1B shape's 8 rows at 32K: 1024 programs
    assert triton_split_count(2, 8, 132096, 132) == 64  # the 8B's 2 rows at 128K: 1024 programs
    assert triton_split_count(8, 8, 1 << 20, 132) == 16  # 1024 >= 4 x 132: enough programs
    assert triton_split_count(4, 2, 1300, 132) == 4  # 325 keys each; 8 would be below the minimum
    assert 1300 // 4 >= TRITON_SPLIT_MIN_KEYS > 1300 // 8
    assert triton_split_count(1, 1, 100, 132) == 1


def test_split_counts_fill_the_gpu_and_divide_the_capacity():
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


def test_layer_halves_run_on_kernels_only_where_the_kernels_apply(monkeypatch):
    from kanana_longctx.kernels import choice

    monkeypatch.delenv(choice.LAYER_KERNELS_ENV, raising=False)
    monkeypatch.setattr(choice, "triton_modules", lambda: ("triton", "tl"))
    assert choice.layer_halves("cuda", 128, fused_passes=True, qk_norms=False) == "kernels"
    assert choice.layer_halves("cuda", 64, fused_passes=False, qk_norms=False) == "eager"
    assert choice.layer_halves("cuda", 128, fused_passes=True, qk_norms=True) == "compiled"  # Qwen3's q/k norms
    assert choice.layer_halves("cuda", 96, fused_passes=True, qk_norms=False) == "compiled"  # not a power of two
    assert choice.layer_halves("cpu", 128, fused_passes=True, qk_norms=False) == "compiled"
    monkeypatch.setenv(choice.LAYER_KERNELS_ENV, "0")
    assert choice.layer_halves("cuda", 128, fused_passes=True, qk_norms=False) == "compiled"
    monkeypatch.delenv(choice.LAYER_KERNELS_ENV)
    monkeypatch.setattr(choice, "triton_modules", lambda: None)
    assert choice.layer_halves("cuda", 128, fused_passes=True, qk_norms=False) == "compiled"
