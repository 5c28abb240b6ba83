"""Per-layer-type rope_parameters and MLA: the patch, its inverse, and --check against the real transformers."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from kanana_longctx.errors import ConfigError
from kanana_longctx.yarn.jsontext import load_object
from kanana_longctx.yarn.params import RopeSettings, YarnParams
from kanana_longctx.yarn.patch import patch_text, restore_keys_text, strip_yarn_text
from kanana_longctx.yarn.recipes import recipe_for
from kanana_longctx.yarn.rope_math import expected_rope, rotary_dim
from kanana_longctx.yarn.verify import ConfigCheck, check_config

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
SMALL = EXAMPLES / "kanana-2-1.3b-like-config.json"
MLA = EXAMPLES / "kanana-2-30b-a3b-like-config.json"
KANANA_2 = YarnParams(4.0, 32768, 32.0, 1.0)


def patched(path: Path, **kwargs) -> str:
    text = path.read_text()
    recipe = recipe_for(json.loads(text), **kwargs)
    return patch_text(text, recipe.params, layer_types=recipe.layer_types).text


def test_only_the_asked_layer_type_changes_byte_for_byte():
    text = SMALL.read_text()
    new = patched(SMALL)
    after, before = json.loads(new), json.loads(text)
    assert after["rope_parameters"]["full_attention"] == {
        "rope_type": "yarn",
        "type": "yarn",
        "factor": 4.0,
        "original_max_position_embeddings": 32768,
        "beta_fast": 32.0,
        "beta_slow": 1.0,
        "rope_theta": 1000000.0,
    }
    assert after["rope_parameters"]["sliding_attention"] == before["rope_parameters"]["sliding_attention"]
    assert "rope_scaling" not in after and "rope_theta" not in after  # a flat block would replace the nested ones
    assert {k: v for k, v in after.items() if k != "rope_parameters"} == {
        k: v for k, v in before.items() if k != "rope_parameters"
    }
    sliding = '    "sliding_attention": {\n      "rope_theta": 10000.0,\n      "rope_type": "default"\n    }'
    assert sliding in text and sliding in new  # the sibling block's text is untouched, nesting indent kept
    assert '\n      "rope_type": "yarn",\n' in new


def test_per_layer_patch_is_idempotent_restorable_and_strippable():
    text = SMALL.read_text()
    first = patch_text(text, KANANA_2, layer_types=["full_attention"])
    again = patch_text(first.text, KANANA_2, layer_types=["full_attention"])
    assert first.changed and not again.changed
    assert set(first.replaced) == {"rope_parameters"}
    assert restore_keys_text(first.text, first.replaced) == text
    assert json.loads(strip_yarn_text(first.text).text) == json.loads(text)


def test_yarn_already_on_some_layers_is_reported_and_kept_unless_forced():
    shipped = patch_text(SMALL.read_text(), YarnParams(2.0, 32768, 32.0, 1.0), layer_types=["full_attention"]).text
    with pytest.raises(ConfigError, match=r"\(full_attention layers\) already carries YaRN \(factor 2 over 32768"):
        patch_text(shipped, KANANA_2, layer_types=["full_attention"], replace_yarn=False)
    forced = patch_text(shipped, KANANA_2, layer_types=["full_attention"], replace_yarn=False, force=True)
    assert json.loads(forced.text)["rope_parameters"]["full_attention"]["factor"] == 4.0
    # YaRN on the sliding layers as well, asked for there too; the other type is reported, not touched
    both = patch_text(shipped, KANANA_2, layer_types=["sliding_attention"], replace_yarn=False)
    after = json.loads(both.text)["rope_parameters"]
    assert after["full_attention"]["factor"] == 2.0 and after["sliding_attention"]["factor"] == 4.0
    assert any("full_attention layers already carry YaRN (factor 2 over 32768" in n for n in both.notes)


def test_rope_scaling_beside_nested_blocks_is_refused():
    config = json.loads(SMALL.read_text())
    config["rope_scaling"] = {"rope_type": "linear", "factor": 2.0}
    with pytest.raises(ConfigError, match="rope_scaling block beside per-layer-type rope_parameters"):
        patch_text(json.dumps(config, indent=2), KANANA_2, layer_types=["full_attention"])


def test_nested_blocks_need_layer_types_and_vice_versa():
    config = json.loads(SMALL.read_text())
    del config["layer_types"]
    with pytest.raises(ConfigError, match="per-layer blocks .* but 'layer_types' does not name them"):
        RopeSettings.from_config(config)
    with pytest.raises(ConfigError, match="name the layer types to patch"):
        patch_text(SMALL.read_text(), KANANA_2)


def test_check_passes_per_layer_type_on_the_patched_example():
    result = check_config(load_object(patched(SMALL)))
    assert result.passed, result.all_problems()
    by_type = {r.settings.layer_type: r for r in result.reports}
    assert by_type["full_attention"].expected.params == KANANA_2
    assert round(by_type["full_attention"].actual.attention_factor, 6) == 1.138629  # 0.1 ln 4 + 1
    assert by_type["sliding_attention"].expected is None and by_type["sliding_attention"].actual.max_ratio == 1.0
    assert [p.ok for p in result.probes] == [True, True]  # Olmo3's own rotary class computes each block
    assert ConfigCheck.from_dict(json.loads(json.dumps(result.to_dict()))) == result


def test_check_fails_on_the_unpatched_example_and_on_a_class_that_ignores_layer_types():
    result = check_config(json.loads(SMALL.read_text()))
    assert not result.passed and "YaRN for none of its layer types" in result.all_problems()[0]
    llama = {**load_object(patched(SMALL)), "model_type": "llama", "architectures": ["LlamaForCausalLM"]}
    result = check_config(llama)
    assert all(r.passed for r in result.reports)  # the rotary functions alone would say yes ...
    assert not result.passed and result.probes[0].ok is False  # ... but LlamaRotaryEmbedding cannot read the blocks
    detail = result.probes[0].detail
    assert "LlamaRotaryEmbedding keeps no full_attention block: it uses one RoPE for every layer" in detail
    remote = {**llama, "model_type": "kanana2-remote-code"}
    probes = check_config(remote).probes
    assert probes and all(p.ok is None and "not in transformers" in p.detail for p in probes)


def test_mla_rotary_dimension_is_qk_rope_head_dim():
    config = json.loads(MLA.read_text())
    assert rotary_dim(config) == 64  # not hidden_size / heads = 64 by coincidence: see the next line
    assert rotary_dim({**config, "hidden_size": 7168, "num_attention_heads": 128, "head_dim": 56}) == 64
    expected = expected_rope(load_object(patched(MLA)))
    assert expected.dim == 64 and len(expected.inv_freq) == 32
    assert expected.attention_factor == 1.0 and expected.softmax_scale_factor == pytest.approx(1.296477, abs=1e-6)


def test_mla_check_verifies_the_softmax_scale(monkeypatch):
    config = load_object(patched(MLA))
    result = check_config(config)
    assert result.passed, result.all_problems()
    (probe,) = result.probes
    assert probe.name == "softmax scale" and probe.ok and probe.actual == pytest.approx(1.296477, abs=1e-6)
    assert not result.reports[0].trap  # attention factor 1.0 is what the pair means, not the 4.51-4.55 trap
    # A transformers whose DeepSeek attention did not apply mscale_all_dim would lose YaRN's temperature.
    from transformers.models.deepseek_v3 import modeling_deepseek_v3

    monkeypatch.setattr(modeling_deepseek_v3, "yarn_apply_mscale", lambda rope_parameters, scaling: scaling)
    result = check_config(config)
    assert not result.passed and result.probes[0].ok is False
    assert "softmax scale: DeepseekV3Attention multiplies 1/sqrt(192) by 1.000000" in result.all_problems()[0]


def test_mla_config_of_an_unknown_model_type_is_read_as_deepseek_and_the_softmax_left_unverified():
    config = {**load_object(patched(MLA)), "model_type": "kanana2-remote-code", "architectures": ["Kanana2ForCausalLM"]}
    result = check_config(config)
    assert result.reports[0].passed and result.reports[0].actual.config_class == "DeepseekV3Config"
    assert result.passed and result.probes[0].ok is None and "not verified" in result.probes[0].detail
