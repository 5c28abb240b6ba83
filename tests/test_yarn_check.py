"""--check's verdicts: the real installed transformers on real configs, and the trap decision logic."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from kanana_longctx.yarn import check
from kanana_longctx.yarn.params import YarnParams
from kanana_longctx.yarn.patch import apply_yarn_to_config_dict, yarn_block
from kanana_longctx.yarn.rope_math import default_inv_freq
from kanana_longctx.yarn.serving import EngineHint, serving_hints

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "kanana-like-8b-config.json"


def example() -> dict:
    return json.loads(EXAMPLE.read_text())


def test_patched_example_passes_with_readme_numbers():
    report = check.check_config_dict(apply_yarn_to_config_dict(example(), YarnParams()))
    assert report.passed, report.problems
    assert round(report.actual.attention_factor, 6) == 1.148160
    assert report.actual.max_ratio == pytest.approx(4.4, rel=1e-6)
    assert report.inv_freq_max_rel_diff < check.INV_FREQ_RTOL
    assert not report.trap
    assert check.CheckReport.from_dict(json.loads(json.dumps(report.to_dict()))) == report


def test_readme_only_block_also_passes():
    config = example()
    config["rope_scaling"] = {
        "factor": 4.4,
        "original_max_position_embeddings": 32768,
        "type": "yarn",
        "beta_fast": 64,
        "beta_slow": 2,
    }
    assert check.check_config_dict(config).passed


def test_unpatched_fails_with_a_fix():
    report = check.check_config_dict(example())
    assert not report.passed
    assert "does not declare YaRN" in report.problems[0] and "--yarn" in report.fixes[0]
    assert report.actual.rope_type == "default" and report.actual.attention_factor == 1.0


def test_transformers5_theta_reset_is_caught():
    """YARN.md: rope_scaling added to a transformers-5-saved file (theta only inside rope_parameters) resets theta
    to 10000 in 5.x. The installed transformers must show it, and --check must fail on it."""
    import transformers

    if check.version_tuple(transformers.__version__) < (5, 0):
        pytest.skip("a transformers 5 behaviour")
    config = {k: v for k, v in example().items() if k not in ("rope_theta", "rope_scaling")}
    config["rope_parameters"] = {"rope_theta": 500000.0, "rope_type": "default"}
    config["rope_scaling"] = yarn_block(YarnParams())
    report = check.check_config_dict(config)
    assert report.actual.rope_theta == 10000.0
    assert not report.passed and any("rope_theta 10000" in p for p in report.problems)


def fake_actual(config: dict, version: str, factor_applied: float, rope_type: str = "yarn") -> check.TransformersRope:
    """What transformers 4.51-4.55 return for a patched config: YaRN with factor 1 (no interpolation)."""
    params = YarnParams(factor=max(factor_applied, 1.0000001))
    from kanana_longctx.yarn.rope_math import yarn_inv_freq

    inv = default_inv_freq(128, 500000.0) if factor_applied == 1.0 else yarn_inv_freq(128, 500000.0, params)
    return check.TransformersRope(
        version=version,
        config_class="LlamaConfig",
        rope_type=rope_type,
        rope_theta=500000.0,
        max_position_embeddings=config["max_position_embeddings"],
        original_max_position_embeddings=32768,
        dim=128,
        inv_freq=tuple(inv),
        attention_factor=1.0 if factor_applied == 1.0 else params.attention_factor,
        max_ratio=factor_applied,
    )


def test_trap_from_the_numbers(monkeypatch):
    config = apply_yarn_to_config_dict(example(), YarnParams())
    monkeypatch.setattr(check, "transformers_rope", lambda c, layer_type=None: fake_actual(c, "4.53.3", 1.0))
    report = check.check_config_dict(config)
    assert not report.passed and report.trap
    assert "silently off" in report.problems[0] and "4.51-4.55" in report.problems[0]
    assert "transformers>=4.56" in report.fixes[0] and "--max-positions 144179" in report.fixes[0]


def test_trap_from_the_version_even_if_numbers_look_right(monkeypatch):
    config = apply_yarn_to_config_dict(example(), YarnParams())
    monkeypatch.setattr(check, "transformers_rope", lambda c, layer_type=None: fake_actual(c, "4.55.4", 4.4))
    assert check.check_config_dict(config).trap
    # the work-around (max_position_embeddings = 144179) is accepted in that range
    config["max_position_embeddings"] = 144179
    report = check.check_config_dict(config)
    assert report.passed and not report.trap


@pytest.mark.parametrize(
    "version,trapped",
    [
        ("4.50.3", False),
        ("4.51.0", True),
        ("4.55.4", True),
        ("4.56.0", False),
        ("5.24.0", False),
        ("4.57.0.dev0", False),
    ],
)
def test_trap_range(version, trapped):
    assert check.in_trap_range(version) is trapped


def test_serving_hints():
    hints = {h.engine: h for h in serving_hints("org/name", YarnParams(), "/cache/snap")}
    assert "--max-model-len 131072" in hints["vLLM"].command
    assert "144179" in hints["vLLM"].command
    assert "--context-length 131072" in hints["SGLang"].command
    assert "SGLANG_ALLOW_OVERWRITE_LONGER_CONTEXT_LEN=1" in hints["SGLang"].command
    assert "convert_hf_to_gguf.py /cache/snap" in hints["llama.cpp"].command
    assert "--yarn-beta-fast 64 --yarn-beta-slow 2" in hints["llama.cpp"].without_patch
    assert '"beta_fast":64.0' in hints["vLLM"].without_patch and '"rope_type":"yarn"' in hints["vLLM"].without_patch
    assert not hints["TGI"].supported and "beta_fast 32" in hints["TGI"].note
    assert EngineHint.from_dict(hints["TGI"].to_dict()) == hints["TGI"]


def test_yarn_not_read_at_all_is_not_called_the_version_trap(monkeypatch):
    """A file with YaRN only in rope_parameters, read by transformers 4 (which reads only rope_scaling)."""
    config = apply_yarn_to_config_dict(example(), YarnParams())
    del config["rope_scaling"]
    fake = lambda c, layer_type=None: fake_actual(c, "4.53.3", 1.0, rope_type="default")  # noqa: E731
    monkeypatch.setattr(check, "transformers_rope", fake)
    report = check.check_config_dict(config)
    assert not report.passed and not report.trap
    assert "reads rope type 'default'" in report.problems[0] and "only rope_scaling" in report.problems[0]
    assert "rope_scaling and rope_parameters" in report.fixes[0]


@pytest.mark.parametrize(
    "architecture, key", [(None, "llama"), ("LlamaForCausalLM", "llama"), ("Qwen2ForCausalLM", "qwen2"),
                          ("SomethingNewForCausalLM", "ARCH")],
)
def test_unpatched_llama_cpp_command_raises_the_ggufs_training_context(architecture, key):
    """llama-server caps a slot at the GGUF's context_length whatever -c says: the unpatched command lifts it."""
    from kanana_longctx.yarn.params import YarnParams
    from kanana_longctx.yarn.serving import serving_hints

    hint = next(h for h in serving_hints("m", YarnParams(), architecture=architecture) if h.engine == "llama.cpp")
    assert f"--override-kv {key}.context_length=int:{YarnParams().serve_context}" in hint.without_patch
    assert "--override-kv" not in hint.command  # a GGUF converted from the patched config carries the length
