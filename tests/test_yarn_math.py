"""rope_math (our independent YaRN) against transformers' own computation, and YarnParams validation."""

from __future__ import annotations

import math

import pytest

from kanana_longctx.errors import BadInput, ConfigError
from kanana_longctx.yarn.params import RopeSettings, YarnParams
from kanana_longctx.yarn.patch import apply_yarn_to_config_dict
from kanana_longctx.yarn.rope_math import (
    correction_range,
    default_inv_freq,
    expected_rope,
    max_ratio,
    max_relative_difference,
    rotary_dim,
    yarn_attention_factor,
    yarn_inv_freq,
)


def llama(head_dim: int = 128, heads: int = 32, theta: float = 500000.0, mpe: int = 32768, **extra) -> dict:
    return {
        "model_type": "llama",
        "hidden_size": head_dim * heads,
        "num_attention_heads": heads,
        "num_key_value_heads": max(1, heads // 4),
        "num_hidden_layers": 2,
        "intermediate_size": 64,
        "vocab_size": 128,
        "max_position_embeddings": mpe,
        "rope_theta": theta,
        **extra,
    }


def test_readme_numbers():
    params = YarnParams()
    assert (params.factor, params.original_max_position_embeddings, params.beta_fast, params.beta_slow) == (
        4.4,
        32768,
        64.0,
        2.0,
    )
    assert round(yarn_attention_factor(4.4), 6) == 1.148160
    assert params.effective_context == 144179
    assert params.serve_context == 131072
    inv = yarn_inv_freq(128, 500000.0, params)
    base = default_inv_freq(128, 500000.0)
    assert max_ratio(base, inv) == pytest.approx(4.4, rel=1e-12)
    # The fastest pairs (many rotations over 32K tokens) keep their frequency exactly.
    assert inv[0] == base[0] and inv[1] == base[1]
    assert min(b / s for b, s in zip(base, inv)) == 1.0


def test_correction_range_matches_hand_computation():
    # d=128, theta=5e5, L=32768: pair index that turns 64 times = 128 ln(32768/(128 pi)) / (2 ln 5e5)
    low_exact = 128 * math.log(32768 / (64 * 2 * math.pi)) / (2 * math.log(500000.0))
    high_exact = 128 * math.log(32768 / (2 * 2 * math.pi)) / (2 * math.log(500000.0))
    assert correction_range(64, 2, 128, 500000.0, 32768) == (math.floor(low_exact), math.ceil(high_exact))
    assert correction_range(64, 2, 128, 500000.0, 32768, truncate=False) == (low_exact, high_exact)


@pytest.mark.parametrize(
    "factor,theta,head_dim,beta_fast,beta_slow,original",
    [
        (4.4, 500000.0, 128, 64.0, 2.0, 32768),
        (4.4, 10000.0, 64, 64.0, 2.0, 32768),
        (2.0, 1000000.0, 128, 32.0, 1.0, 8192),
        (8.0, 5000000.0, 96, 64.0, 2.0, 32768),
        (1.5, 500000.0, 256, 16.0, 0.5, 4096),
        (16.0, 10000.0, 80, 32.0, 1.0, 2048),
    ],
)
def test_matches_transformers(factor, theta, head_dim, beta_fast, beta_slow, original):
    from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS

    from kanana_longctx.yarn.check import load_transformers_config

    params = YarnParams(factor, original, beta_fast, beta_slow)
    config = apply_yarn_to_config_dict(llama(head_dim=head_dim, theta=theta, mpe=original), params)
    inv_t, attention_t = ROPE_INIT_FUNCTIONS["yarn"](load_transformers_config(config), "cpu")
    ours = expected_rope(config)
    assert len(ours.inv_freq) == head_dim // 2 == inv_t.numel()
    assert max_relative_difference(ours.inv_freq, inv_t.double().tolist()) < 1e-5
    assert attention_t == pytest.approx(ours.attention_factor, rel=1e-12)
    assert ours.max_ratio == pytest.approx(factor, rel=1e-9)


def test_mscale_and_explicit_attention_factor():
    assert yarn_attention_factor(4.4, attention_factor=1.0) == 1.0
    assert yarn_attention_factor(40.0, mscale=1.0, mscale_all_dim=1.0) == 1.0
    assert yarn_attention_factor(40.0, mscale=1.0, mscale_all_dim=0.5) == pytest.approx(
        (0.1 * math.log(40) + 1) / (0.05 * math.log(40) + 1)
    )


def test_rotary_dim_variants():
    assert rotary_dim({"hidden_size": 4096, "num_attention_heads": 32}) == 128
    assert rotary_dim({"head_dim": 64, "hidden_size": 4096, "num_attention_heads": 32}) == 64
    assert rotary_dim({"head_dim": 128, "partial_rotary_factor": 0.5}) == 64
    with pytest.raises(ConfigError):
        rotary_dim({"vocab_size": 3})


@pytest.mark.parametrize(
    "kwargs,fragment",
    [
        ({"factor": 1.0}, "factor must be greater than 1"),
        ({"factor": 0.5}, "factor must be greater than 1"),
        ({"factor": float("nan")}, "finite"),
        ({"beta_fast": 2.0, "beta_slow": 2.0}, "must be greater than beta_slow"),
        ({"beta_fast": 1.0, "beta_slow": 2.0}, "must be greater than beta_slow"),
        ({"beta_slow": 0.0}, "beta_slow must be greater than 0"),
        ({"original_max_position_embeddings": 0}, "positive integer"),
    ],
)
def test_params_validation(kwargs, fragment):
    with pytest.raises(BadInput, match=fragment):
        YarnParams(**kwargs)


def test_params_round_trip_and_normalisation():
    params = YarnParams(factor=4, beta_fast=64, beta_slow=2)
    assert isinstance(params.factor, float) and isinstance(params.beta_fast, float)
    assert YarnParams.from_dict(params.to_dict()) == params == YarnParams(4.0, 32768, 64.0, 2.0)


def test_rope_settings_follow_transformers5_precedence():
    config = llama(
        rope_scaling={
            "type": "yarn",
            "factor": 4.4,
            "original_max_position_embeddings": 32768,
            "beta_fast": 64,
            "beta_slow": 2,
        },
        rope_parameters={"rope_type": "linear", "factor": 2.0, "rope_theta": 500000.0},
    )
    settings = RopeSettings.from_config(config)
    assert (settings.rope_type, settings.source_key, settings.factor) == ("yarn", "rope_scaling", 4.4)
    assert settings.yarn_params() == YarnParams()
    assert RopeSettings.from_dict(settings.to_dict()) == settings
    v5 = {
        "hidden_size": 4096,
        "num_attention_heads": 32,
        "rope_parameters": {"rope_type": "default", "rope_theta": 8e6},
    }
    settings = RopeSettings.from_config(v5)
    assert (settings.rope_theta, settings.theta_source, settings.is_scaled) == (8e6, "rope_parameters", False)
    with pytest.raises(ConfigError, match="per-layer"):
        RopeSettings.from_config({"rope_parameters": {"full_attention": {"rope_type": "default"}}})
