"""Recipes: which one a config's family gets, how options override it, and the in-memory dicts for a live config."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from kanana_longctx.errors import BadInput
from kanana_longctx.yarn.params import YarnParams
from kanana_longctx.yarn.patch import apply_yarn_to_config_dict
from kanana_longctx.yarn.recipes import (
    YarnRecipe,
    family_of,
    live_rope_updates,
    native_context,
    plain_rope_updates,
    recipe_for,
)
from kanana_longctx.yarn.rope_math import default_inv_freq, max_relative_difference, yarn_inv_freq

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def example(name: str) -> dict:
    return json.loads((EXAMPLES / f"{name}-config.json").read_text())


KANANA_15, KANANA_2_MLA, KANANA_2_SMALL = "kanana-like-8b", "kanana-2-30b-a3b-like", "kanana-2-1.3b-like"


def test_kanana_15_config_keeps_todays_recipe():
    recipe = recipe_for(example(KANANA_15))
    assert recipe.name == "kanana-1.5" and recipe.layer_types is None and not recipe.notes
    assert recipe.params == YarnParams()  # factor 4.4 over 32768, betas 64/2: the default since the first release
    assert "LlamaForCausalLM" in recipe.reason and "chosen from the config" in recipe.reason
    assert YarnRecipe.from_dict(json.loads(json.dumps(recipe.to_dict()))) == recipe


def test_mla_config_gets_the_deepseek_style_kanana2_block():
    recipe = recipe_for(example(KANANA_2_MLA))
    assert recipe.name == "kanana-2" and "MLA" in recipe.reason and "qk_rope_head_dim 64" in recipe.reason
    assert recipe.params == YarnParams(4.0, 32768, 32.0, 1.0, mscale=1.0, mscale_all_dim=1.0)
    assert recipe.params.attention_factor == 1.0  # the equal pair cancels on cos/sin ...
    assert recipe.params.softmax_scale_factor == pytest.approx((0.1 * math.log(4.0) + 1) ** 2)  # ... into softmax


def test_per_layer_type_config_gets_kanana2_on_full_attention_only():
    recipe = recipe_for(example(KANANA_2_SMALL))
    assert recipe.name == "kanana-2" and recipe.layer_types == ("full_attention",)
    assert recipe.params == YarnParams(4.0, 32768, 32.0, 1.0)  # no mscale pair outside MLA
    assert any("mscale/mscale_all_dim left out" in note for note in recipe.notes)
    everything = recipe_for(example(KANANA_2_SMALL), layer_types=["all"])
    assert everything.layer_types == ("full_attention", "sliding_attention")
    assert recipe_for(example(KANANA_2_SMALL), layer_types=["sliding_attention,full_attention"]).layer_types == (
        "sliding_attention",
        "full_attention",
    )


def test_explicit_recipe_and_numbers_override():
    config = example(KANANA_15)
    recipe = recipe_for(config, "kanana-2", factor=2.0)
    assert recipe.name == "kanana-2" and recipe.reason == "asked for with --recipe"
    assert (recipe.params.factor, recipe.params.beta_fast, recipe.params.beta_slow) == (2.0, 32.0, 1.0)
    custom = recipe_for(config, "custom", factor=8.0)
    assert custom.params == YarnParams(8.0, 32768, 32.0, 1.0) and not custom.notes
    assert recipe_for(config, beta_fast=48.0, beta_slow=3.0).params == YarnParams(4.4, 32768, 48.0, 3.0)


def test_original_comes_from_the_config_when_the_recipe_does_not_fit():
    config = {**example(KANANA_15), "max_position_embeddings": 8192}
    recipe = recipe_for(config)
    assert recipe.params.original_max_position_embeddings == 8192
    assert "original context 8192 from the config itself, not the recipe's 32768" in recipe.notes[0]
    assert recipe_for(config, original=16384).params.original_max_position_embeddings == 16384
    # an already patched file: the YaRN block's original is the native context, not max_position_embeddings
    patched = apply_yarn_to_config_dict(example(KANANA_15), YarnParams(), max_position_embeddings=144179)
    assert native_context(patched) == 32768 and not recipe_for(patched).notes


@pytest.mark.parametrize(
    "kwargs,fragment",
    [
        ({"name": "kanana-3"}, "--recipe must be one of auto, kanana-1.5, kanana-2, custom; got 'kanana-3'"),
        ({"name": "custom"}, "--recipe custom needs --yarn-factor"),
        ({"factor": 1e308}, "factor must be at most 128"),
        ({"factor": float("inf")}, "finite"),
        ({"original": 10**9}, "--yarn-original must be at most 16777216"),
        ({"original": -1}, "--yarn-original must be a positive integer"),
        ({"beta_fast": 1e9}, "beta_fast must be at most 4096"),
        ({"layer_types": ["full_attention"]}, "--layer-types needs per-layer-type rope_parameters"),
    ],
)
def test_bad_recipe_requests(kwargs, fragment):
    with pytest.raises(BadInput, match=fragment.replace("(", r"\(").replace(")", r"\)")):
        recipe_for(example(KANANA_15), **kwargs)


def test_unknown_layer_type_lists_the_known_ones():
    with pytest.raises(BadInput, match="'global' is not one of this config's layer types: full_attention, sliding"):
        recipe_for(example(KANANA_2_SMALL), layer_types=["global"])


def test_custom_needs_an_original_when_the_config_has_none():
    config = {k: v for k, v in example(KANANA_15).items() if k != "max_position_embeddings"}
    with pytest.raises(BadInput, match="--recipe custom needs --yarn-original"):
        recipe_for(config, "custom", factor=2.0)
    assert family_of(config)[0] == "kanana-1.5"


def test_live_updates_match_the_file_patch():
    for name in (KANANA_15, KANANA_2_MLA, KANANA_2_SMALL):
        config = example(name)
        recipe = recipe_for(config)
        live = live_rope_updates(config, recipe)
        patched = apply_yarn_to_config_dict(config, recipe.params, layer_types=recipe.layer_types)
        expected = {k: v for k, v in patched["rope_parameters"].items()}
        if recipe.layer_types is None:
            expected.pop("type")
        else:
            for layer_type in recipe.layer_types:
                expected[layer_type] = {k: v for k, v in expected[layer_type].items() if k != "type"}
        assert live == {"rope_parameters": expected}, name


def test_live_updates_for_transformers_4_and_plain_rope():
    config = example(KANANA_15)
    recipe = recipe_for(config)
    v4 = live_rope_updates(config, recipe, transformers_major=4)
    assert v4["rope_theta"] == 500000.0
    assert "rope_theta" not in v4["rope_scaling"] and v4["rope_scaling"]["factor"] == 4.4
    assert plain_rope_updates(config) == {"rope_parameters": {"rope_type": "default", "rope_theta": 500000.0}}
    assert plain_rope_updates(config, 4) == {"rope_scaling": None, "rope_theta": 500000.0}
    small = apply_yarn_to_config_dict(
        example(KANANA_2_SMALL), YarnParams(4.0, 32768, 32, 1), layer_types=["full_attention"]
    )
    assert plain_rope_updates(small)["rope_parameters"] == example(KANANA_2_SMALL)["rope_parameters"]
    with pytest.raises(BadInput, match="need transformers 5"):
        live_rope_updates(example(KANANA_2_SMALL), recipe_for(example(KANANA_2_SMALL)), transformers_major=4)


def test_live_updates_on_the_real_smollm2_config(smollm2_source):
    """The real SmolLM2 config (native 8192, theta 1e5, head_dim 64): the recipe takes the model's own context, and
    the updates set on the live transformers config make its rotary embedding compute our YaRN."""
    from transformers import AutoConfig
    from transformers.models.llama.modeling_llama import LlamaRotaryEmbedding

    live = AutoConfig.from_pretrained(smollm2_source.directory, **smollm2_source.transformers_kwargs())
    recipe = recipe_for(live.to_dict())
    assert recipe.name == "kanana-1.5" and recipe.params.original_max_position_embeddings == 8192
    assert "original context 8192 from the config itself" in recipe.notes[0]
    for key, value in live_rope_updates(live.to_dict(), recipe).items():
        setattr(live, key, value)
    rotary = LlamaRotaryEmbedding(config=live)
    assert rotary.attention_scaling == pytest.approx(0.1 * math.log(4.4) + 1, rel=1e-12)
    ours = yarn_inv_freq(64, 100000.0, recipe.params)
    assert max_relative_difference(ours, rotary.inv_freq.double().tolist()) < 1e-5
    for key, value in plain_rope_updates(live.to_dict()).items():
        setattr(live, key, value)
    plain = LlamaRotaryEmbedding(config=live)
    assert plain.attention_scaling == 1.0
    assert max_relative_difference(default_inv_freq(64, 100000.0), plain.inv_freq.double().tolist()) < 1e-5
