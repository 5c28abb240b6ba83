"""The JSON-text patch: what it writes, what it leaves alone, its inverse."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from kanana_longctx.errors import ConfigError
from kanana_longctx.yarn.jsontext import JsonDoc
from kanana_longctx.yarn.params import YarnParams
from kanana_longctx.yarn.patch import (
    apply_yarn_to_config_dict,
    patch_text,
    remove_yarn_from_config_dict,
    restore_keys_text,
    strip_yarn_text,
    yarn_block,
)

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "kanana-like-8b-config.json"
ROPE_KEYS = {
    "rope_scaling",
    "rope_parameters",
    "rope_theta",
    "max_position_embeddings",
    "original_max_position_embeddings",
}
BLOCK = {
    "rope_type": "yarn",
    "type": "yarn",
    "factor": 4.4,
    "original_max_position_embeddings": 32768,
    "beta_fast": 64.0,
    "beta_slow": 2.0,
}


def other_keys(config: dict) -> dict:
    return {k: v for k, v in config.items() if k not in ROPE_KEYS}


def assert_yarn_everywhere(config: dict, theta: float) -> None:
    assert config["rope_scaling"] == BLOCK
    assert config["rope_parameters"] == {**BLOCK, "rope_theta": theta}
    assert config["rope_theta"] == theta
    for block in (config["rope_scaling"], config["rope_parameters"]):
        assert isinstance(block["beta_fast"], float) and isinstance(block["beta_slow"], float)


def test_v4_example_patch_changes_only_rope_keys():
    text = EXAMPLE.read_text()
    patch = patch_text(text, YarnParams())
    before, after = json.loads(text), json.loads(patch.text)
    assert_yarn_everywhere(after, 500000.0)
    assert other_keys(after) == other_keys(before)
    assert after["max_position_embeddings"] == 32768
    assert set(patch.replaced) == {"rope_scaling", "rope_parameters"}
    assert patch.replaced == {"rope_scaling": "null", "rope_parameters": None}
    # every original line except `"rope_scaling": null,` is still there, in the same order
    kept = [line for line in text.splitlines() if '"rope_scaling"' not in line]
    new_lines = patch.text.splitlines()
    positions = [new_lines.index(line) for line in kept]
    assert positions == sorted(positions)
    assert patch.text.endswith("}\n")
    assert [k for k in after if k in before] == list(before)


def test_v5_saved_file_gets_theta_copied_to_top_level():
    text = (
        json.dumps(
            {
                "architectures": ["LlamaForCausalLM"],
                "hidden_size": 4096,
                "num_attention_heads": 32,
                "max_position_embeddings": 32768,
                "model_type": "llama",
                "rope_parameters": {"rope_theta": 8000000.0, "rope_type": "default"},
                "transformers_version": "5.24.0",
                "vocab_size": 128256,
            },
            indent=2,
            sort_keys=True,
        )
        + "\n"
    )
    patch = patch_text(text, YarnParams())
    after = json.loads(patch.text)
    assert_yarn_everywhere(after, 8000000.0)
    assert list(after) == sorted(after)  # inserted in sorted position, like the rest of the file
    assert any("copied rope_theta" in note for note in patch.notes)
    assert patch.replaced["rope_theta"] is None


@pytest.mark.parametrize("indent", [2, 4, "\t"])
@pytest.mark.parametrize("newline", ["\n", "\r\n"])
@pytest.mark.parametrize("trailing", [True, False])
def test_style_is_preserved(indent, newline, trailing):
    config = {
        "model_type": "llama",
        "hidden_size": 256,
        "num_attention_heads": 4,
        "rms_norm_eps": 1e-05,
        "rope_theta": 10000.0,
        "vocab_size": 10,
    }
    text = json.dumps(config, indent=indent).replace("\n", newline) + (newline if trailing else "")
    text = text.replace("1e-05", "1.0E-5")  # a spelling json.dumps would never write back
    patched = patch_text(text, YarnParams()).text
    assert "1.0E-5" in patched
    assert patched.endswith(newline) == trailing
    if newline == "\r\n":
        assert "\n" not in patched.replace("\r\n", "")
    unit = indent if isinstance(indent, str) else " " * indent
    assert f'{newline}{unit}"rope_scaling": {{{newline}{unit}{unit}"rope_type": "yarn",' in patched
    assert json.loads(patched)["rope_scaling"] == BLOCK


def test_one_line_file_stays_on_one_line():
    text = '{"model_type": "llama", "head_dim": 64, "rope_theta": 10000.0}'
    patched = patch_text(text, YarnParams()).text
    assert "\n" not in patched
    assert patched.startswith('{"model_type": "llama", "head_dim": 64, "rope_theta": 10000.0, "rope_scaling": {')
    assert json.loads(patched)["rope_parameters"]["rope_theta"] == 10000.0


def test_idempotent_and_restorable():
    text = EXAMPLE.read_text()
    first = patch_text(text, YarnParams())
    second = patch_text(first.text, YarnParams())
    assert first.changed and not second.changed and second.text == first.text
    assert restore_keys_text(first.text, first.replaced) == text


def test_other_parameters_change_the_blocks():
    first = patch_text(EXAMPLE.read_text(), YarnParams()).text
    second = patch_text(first, YarnParams(factor=2.0, beta_fast=32, beta_slow=1)).text
    after = json.loads(second)
    assert after["rope_scaling"]["factor"] == 2.0 and after["rope_parameters"]["beta_slow"] == 1.0


def test_max_position_embeddings_and_top_level_original():
    config = {
        "hidden_size": 128,
        "num_attention_heads": 2,
        "max_position_embeddings": 32768,
        "original_max_position_embeddings": 4096,
        "rope_theta": 10000.0,
    }
    text = json.dumps(config, indent=2)
    patch = patch_text(text, YarnParams(), max_position_embeddings=144179)
    after = json.loads(patch.text)
    assert after["max_position_embeddings"] == 144179
    assert after["original_max_position_embeddings"] == 32768  # agrees with the block now
    assert patch.replaced["max_position_embeddings"] == "32768"
    assert restore_keys_text(patch.text, patch.replaced) == text


def test_existing_llama3_scaling_needs_force():
    llama3 = {
        "factor": 8.0,
        "low_freq_factor": 1.0,
        "high_freq_factor": 4.0,
        "original_max_position_embeddings": 8192,
        "rope_type": "llama3",
    }
    text = json.dumps(
        {"hidden_size": 128, "num_attention_heads": 2, "rope_scaling": llama3, "rope_theta": 500000.0}, indent=2
    )
    with pytest.raises(ConfigError, match="'llama3' RoPE scaling; pass --force"):
        patch_text(text, YarnParams())
    patch = patch_text(text, YarnParams(), force=True)
    assert patch.replaced_scaling == "llama3"
    assert json.loads(patch.replaced["rope_scaling"]) == llama3
    assert restore_keys_text(patch.text, patch.replaced) == text


@pytest.mark.parametrize("kind", ["linear", "dynamic", "longrope"])
def test_other_scalings_refused(kind):
    text = json.dumps({"rope_parameters": {"rope_type": kind, "factor": 2.0, "rope_theta": 1e4}})
    with pytest.raises(ConfigError, match=f"'{kind}'"):
        patch_text(text, YarnParams())


@pytest.mark.parametrize(
    "text,fragment",
    [
        ("{", "invalid JSON at line 1, column 2: expecting property name"),
        ("[1, 2]", "JSON object, found list"),
        ('{"rope_scaling": 3}', "'rope_scaling' must be an object"),
        ('{"rope_theta": 1e4, "rope_theta": 5e5}', "2 times"),
        ('{"rope_theta": 1e4, "rope_parameters": {"rope_theta": 5e5}}', "rope_theta disagrees"),
    ],
)
def test_bad_configs(text, fragment):
    with pytest.raises(ConfigError, match=fragment):
        patch_text(text, YarnParams())


def test_strip_without_record():
    patched = patch_text(EXAMPLE.read_text(), YarnParams()).text
    stripped = json.loads(strip_yarn_text(patched).text)
    assert "rope_scaling" not in stripped and "rope_parameters" not in stripped
    assert stripped["rope_theta"] == 500000.0
    v5 = json.dumps({"rope_parameters": {**BLOCK, "rope_theta": 8e6}}, indent=2)
    assert json.loads(strip_yarn_text(v5).text) == {"rope_parameters": {"rope_theta": 8e6, "rope_type": "default"}}
    plain = EXAMPLE.read_text()
    assert not strip_yarn_text(plain).changed


def test_dict_api_for_the_runner():
    base = json.loads(EXAMPLE.read_text())
    patched = apply_yarn_to_config_dict(base, YarnParams())
    assert_yarn_everywhere(patched, 500000.0)
    assert base["rope_scaling"] is None  # the input is not modified
    assert yarn_block(YarnParams(), 1.0)["rope_theta"] == 1.0
    removed = remove_yarn_from_config_dict(patched)
    assert "rope_scaling" not in removed and removed["rope_theta"] == 500000.0


def test_jsondoc_delete_and_insert_positions():
    doc = JsonDoc.parse('{\n  "b": 1,\n  "a": [1, {"x": "}"}],\n  "c": "q\\"uote"\n}\n')
    assert doc.keys() == ["b", "a", "c"]
    assert JsonDoc.parse(doc.delete("b")).text == '{\n  "a": [1, {"x": "}"}],\n  "c": "q\\"uote"\n}\n'
    assert JsonDoc.parse(doc.delete("c")).text == '{\n  "b": 1,\n  "a": [1, {"x": "}"}]\n}\n'
    inserted = doc.insert("z", "0", anchors=("b",))
    assert inserted == '{\n  "b": 1,\n  "z": 0,\n  "a": [1, {"x": "}"}],\n  "c": "q\\"uote"\n}\n'
    assert JsonDoc.parse("{}").set("k", 1) == '{\n  "k": 1\n}'


def test_non_numeric_theta_is_bad_input():
    from kanana_longctx.errors import BadInput

    with pytest.raises(BadInput, match="rope_theta must be a finite number"):
        patch_text('{"rope_parameters": {"rope_type": "default", "rope_theta": "big"}}', YarnParams())
