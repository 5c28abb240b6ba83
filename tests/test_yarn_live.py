"""`niah --yarn` on the loader's path (backends.local.load_model): the recipe the config's family needs, put on the
live config with the same blocks `config --yarn` writes, and a built model whose rotary really computes what
`config --check` expects (per layer type, and the MLA softmax scale). One test per recipe, on the repository's
example configs cut to CPU sizes (their RoPE blocks and attention layout kept; the rotary dims of the 8B and the
MLA ones too)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from kanana_longctx.backends.local import load_config, load_model
from kanana_longctx.hub import resolve_model
from kanana_longctx.options import RunOptions
from kanana_longctx.yarn.patch import apply_yarn_to_config_dict
from kanana_longctx.yarn.recipes import recipe_for
from kanana_longctx.yarn.rope_math import default_inv_freq, expected_rope, max_relative_difference
from kanana_longctx.yarn.verify import check_config

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
SMALL = {"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2, "vocab_size": 1000}
SMALL_BY_NAME = {
    "kanana-like-8b": {"num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 128},
    "kanana-2-1.3b-like": {"num_attention_heads": 4, "num_key_value_heads": 2,
                           "layer_types": ["sliding_attention", "full_attention"]},
    "kanana-2-30b-a3b-like": {"num_attention_heads": 4, "num_key_value_heads": 4, "kv_lora_rank": 32,
                              "q_lora_rank": 32, "qk_nope_head_dim": 16, "qk_rope_head_dim": 64, "v_head_dim": 16,
                              "n_routed_experts": 4, "num_experts_per_tok": 2, "moe_intermediate_size": 32},
}


def small_model_dir(name: str, tmp_path) -> tuple[Path, dict]:
    """A random model of the example's architecture at CPU size, saved without YaRN (weights and config)."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    data = {**json.loads((EXAMPLES / f"{name}-config.json").read_text()), **SMALL, **SMALL_BY_NAME[name]}
    data.pop("transformers_version", None)
    src = tmp_path / "src"
    src.mkdir()
    (src / "config.json").write_text(json.dumps(data))
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(src))
    out = tmp_path / name
    model.save_pretrained(out)
    return out, data


def _rotary(model):
    return model.model.rotary_emb


@pytest.mark.parametrize(
    ("name", "recipe"),
    [("kanana-like-8b", "kanana-1.5"), ("kanana-2-1.3b-like", "kanana-2"), ("kanana-2-30b-a3b-like", "kanana-2")],
)
def test_niah_yarn_applies_the_familys_recipe_to_the_loaded_model(name, recipe, tmp_path):
    directory, data = small_model_dir(name, tmp_path)
    source = resolve_model(str(directory))
    options = RunOptions(device="cpu", dtype="float32", attn="sdpa", yarn=True)
    chosen = recipe_for(data)
    assert chosen.name == recipe
    # the live config carries exactly the blocks `config --yarn` writes into the file (less the legacy "type")
    patched = apply_yarn_to_config_dict(data, chosen.params, layer_types=chosen.layer_types)
    live, _ = load_config(source, options)
    blocks = [None] if chosen.layer_types is None else list(chosen.layer_types)
    for layer_type in blocks:
        written = patched["rope_parameters"] if layer_type is None else patched["rope_parameters"][layer_type]
        held = live.rope_parameters if layer_type is None else live.rope_parameters[layer_type]
        assert {k: v for k, v in written.items() if k != "type"} == {k: v for k, v in held.items() if k in written}
    assert check_config(patched).passed  # what `config --check` says of the file

    loaded = load_model(source, options)
    assert any(note.startswith(f"YaRN recipe {recipe}") for note in loaded.notes), loaded.notes
    assert loaded.yarn and loaded.yarn["factor"] == chosen.params.factor
    rotary = _rotary(loaded.model)
    for layer_type in blocks:
        expected = expected_rope(patched, layer_type)
        prefix = "" if layer_type is None else f"{layer_type}_"
        inv = [float(x) for x in getattr(rotary, f"{prefix}inv_freq").double().tolist()]
        scaling = float(getattr(rotary, f"{prefix}attention_scaling"))
        assert max_relative_difference(expected.inv_freq, inv) < 1e-5
        assert max_relative_difference(default_inv_freq(len(inv) * 2, expected.rope_theta), inv) > 0.5  # YaRN on
        assert scaling == pytest.approx(expected.attention_factor, rel=1e-6)
        if data.get("kv_lora_rank"):  # MLA: the temperature sits in the softmax scale, as --check reads it
            attention = loaded.model.model.layers[0].self_attn
            qk = data["qk_nope_head_dim"] + data["qk_rope_head_dim"]
            assert attention.scaling * qk**0.5 == pytest.approx(expected.softmax_scale_factor, rel=1e-6)
            assert expected.softmax_scale_factor > 1.0
    if chosen.layer_types is not None:  # the sliding-window type keeps its plain RoPE
        theta = data["rope_parameters"]["sliding_attention"]["rope_theta"]
        plain = [float(x) for x in rotary.sliding_attention_inv_freq.double().tolist()]
        assert max_relative_difference(default_inv_freq(len(plain) * 2, theta), plain) < 1e-5


def test_numbers_given_override_the_recipe_and_no_yarn_removes_it(tmp_path):
    directory, data = small_model_dir("kanana-2-30b-a3b-like", tmp_path)
    source = resolve_model(str(directory))
    config, yarn = load_config(source, RunOptions(yarn=True, yarn_factor=2.0))
    assert yarn["factor"] == 2.0 and yarn["beta_fast"] == 32.0 and yarn["mscale_all_dim"] == 1.0  # kanana-2's betas
    config, yarn = load_config(source, RunOptions(yarn=True, yarn_recipe="kanana-1.5"))
    assert (yarn["factor"], yarn["beta_fast"]) == (4.4, 64.0)
    config, yarn = load_config(source, RunOptions(yarn=False))
    assert yarn is None
