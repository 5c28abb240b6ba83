"""The benchmark's family shapes: each named shape has the published widths on the architecture transformers has
for it (counted on the meta device: no memory), its FLOP accounting counts what a token runs, and its tiny version
builds and runs on the CPU with the same layout (shapes only: behaviour is tested on SmolLM2)."""

from __future__ import annotations

import pytest
import torch

from kanana_longctx.bench.models import SHAPES, random_model, shape_config
from kanana_longctx.plan.dims import ModelDims
from kanana_longctx.plan.flops import ModelShape


def _params(name: str) -> int:
    from transformers import AutoModelForCausalLM

    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(shape_config(name, yarn=False))
    return sum(p.numel() for p in model.parameters())


def test_the_21b_class_llama_has_head_dim_128_over_a_1792_residual_and_tied_embeddings():
    config = shape_config("kanana-2.1b", yarn=False)
    dims = ModelDims.from_config(config)
    assert (dims.hidden, dims.layers, dims.heads, dims.kv_heads, dims.head_dim, dims.ffn) == (1792, 32, 28, 4, 128, 8064)
    assert dims.attention_width == 3584 != dims.hidden and config.tie_word_embeddings
    assert config.model_type == "llama"
    assert _params("kanana-2.1b") == pytest.approx(2.09e9, rel=0.01)


def test_the_moe_shape_has_64_experts_top_8_and_32k_native():
    config = shape_config("kanana-moe-a3b", yarn=True)
    dims = ModelDims.from_config(config)
    assert config.model_type == "qwen3_moe" and (dims.experts, dims.top_k, dims.expert_ffn) == (64, 8, 1152)
    assert config.rope_parameters["original_max_position_embeddings"] == 32768
    assert _params("kanana-moe-a3b") == pytest.approx(15.4e9, rel=0.02)
    active = ModelShape.from_config(config).non_embedding_params + 2 * 128256 * 2048
    assert 2.5e9 < active < 3.0e9  # "A3B": what a token runs, not the 15B


def test_the_kanana_2_shape_is_mla_plus_moe_with_its_recipe():
    config = shape_config("kanana-2-a3b", yarn=True)
    dims = ModelDims.from_config(config)
    assert config.model_type == "deepseek_v3" and (dims.kv_lora_rank, dims.qk_rope_head_dim, dims.qk_head_dim) == (512, 64, 192)
    assert (dims.experts, dims.top_k, dims.dense_layers) == (128, 6, 1)
    assert config.rope_parameters["factor"] == 4.0 and config.rope_parameters["mscale_all_dim"] == 1.0  # kanana-2
    assert _params("kanana-2-a3b") == pytest.approx(30.4e9, rel=0.02)  # 61 GB in bf16: one H200 holds it
    reduced = ModelDims.from_config(shape_config("kanana-2-a3b-12l", yarn=False))
    assert reduced.layers == 12 and dims.layers == 48
    assert {**reduced.to_dict(), "layers": 48} == dims.to_dict()  # the same per-layer shapes


def test_mla_kv_is_counted_as_transformers_caches_it():
    dims = ModelDims.from_config(shape_config("kanana-2-a3b", yarn=False))
    assert 2 * dims.kv_heads * dims.head_dim == 32 * (192 + 128)  # every head's K (nope + rope) and V


@pytest.mark.parametrize(
    ("name", "family"),
    [("tiny-2.1b", "kanana-2.1b"), ("tiny-moe", "kanana-moe-a3b"), ("tiny-mla", "kanana-2-a3b")],
)
def test_tiny_versions_keep_the_layout_and_run_on_the_cpu(name, family):
    tiny, big = SHAPES[name], SHAPES[family]
    assert (tiny.arch, tiny.tied, bool(tiny.experts), bool(tiny.kv_lora_rank)) == (
        big.arch, big.tied, bool(big.experts), bool(big.kv_lora_rank))
    model = random_model(name, device="cpu", dtype="float32", yarn=True)
    assert type(model).__name__ == type_name(big.arch)
    with torch.inference_mode():
        logits = model(torch.arange(40)[None], logits_to_keep=1).logits
    assert logits.shape == (1, 1, tiny.vocab) and torch.isfinite(logits).all()
    if tiny.head_dim:
        assert ModelDims.from_config(model.config).attention_width != tiny.hidden or tiny.arch != "llama"


def type_name(arch: str) -> str:
    return {"llama": "LlamaForCausalLM", "qwen3_moe": "Qwen3MoeForCausalLM", "deepseek_v3": "DeepseekV3ForCausalLM"}[arch]
