"""An independent implementation of RoPE and static YaRN frequencies, in plain Python floats (no numpy, no torch).

Usage: inv = yarn_inv_freq(dim=128, theta=5e5, params=YarnParams()); yarn_attention_factor(4.4)  # 1.148160

`--check` compares what the installed transformers computes against these numbers, so this module must not call
transformers. It follows the YaRN reference code (jquesnelle/yarn, which transformers, vLLM, SGLang and llama.cpp
all reproduce) rather than the paper's prose: the ramp between "extrapolate" and "interpolate" is linear in the
*dimension index* between the floor/ceil of the two correction dimensions, not linear in the rotation count.

For dimension pair i of a rotary dimension d, theta the base and s the factor:
  inv_freq_i      = theta ** (-2i / d)                          (plain RoPE)
  corr_dim(b)     = d * ln(L / (2 pi b)) / (2 ln theta)          (the pair that turns b times over L trained tokens)
  low, high       = floor(corr_dim(beta_fast)), ceil(corr_dim(beta_slow)), clamped to [0, d - 1]
  ramp_i          = clamp((i - low) / (high - low), 0, 1)         (0: fast pairs, kept; 1: slow pairs, divided by s)
  yarn_inv_freq_i = inv_freq_i * (1 - ramp_i) + inv_freq_i / s * ramp_i
  attention       = 0.1 ln(s) + 1
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

from kanana_longctx.errors import ConfigError
from kanana_longctx.yarn.params import RopeSettings, YarnParams


def rotary_dim(config: Mapping[str, Any]) -> int:
    """The number of rotated channels per head: head_dim (or hidden_size / heads) x partial_rotary_factor."""
    head_dim = config.get("head_dim")
    if not isinstance(head_dim, int) or isinstance(head_dim, bool) or head_dim <= 0:
        hidden, heads = config.get("hidden_size"), config.get("num_attention_heads")
        if not (isinstance(hidden, int) and isinstance(heads, int) and hidden > 0 and heads > 0):
            raise ConfigError("the config has neither 'head_dim' nor 'hidden_size' and 'num_attention_heads'")
        head_dim = hidden // heads
    partial = config.get("partial_rotary_factor")
    if partial is None:
        for key in ("rope_scaling", "rope_parameters"):
            block = config.get(key)
            if isinstance(block, dict) and block.get("partial_rotary_factor") is not None:
                partial = block["partial_rotary_factor"]
                break
    dim = int(head_dim * (1.0 if partial is None else float(partial)))
    if dim < 2 or dim % 2:
        raise ConfigError(f"rotary dimension {dim} is not a positive even number")
    return dim


def default_inv_freq(dim: int, theta: float) -> list[float]:
    """Plain RoPE: one inverse frequency per pair of channels, from 1 down to about 1/theta."""
    return [theta ** (-(2 * i) / dim) for i in range(dim // 2)]


def correction_dim(rotations: float, dim: int, theta: float, original_context: int) -> float:
    """The (fractional) pair index whose wavelength fits `rotations` times into the trained context."""
    return dim * math.log(original_context / (rotations * 2 * math.pi)) / (2 * math.log(theta))


def correction_range(
    beta_fast: float, beta_slow: float, dim: int, theta: float, original_context: int, truncate: bool = True
) -> tuple[float, float]:
    """Pair indices where the ramp starts (fast pairs below are untouched) and ends (slow pairs above are scaled)."""
    low = correction_dim(beta_fast, dim, theta, original_context)
    high = correction_dim(beta_slow, dim, theta, original_context)
    if truncate:
        low, high = math.floor(low), math.ceil(high)
    return max(low, 0), min(high, dim - 1)


def yarn_attention_factor(
    factor: float,
    attention_factor: float | None = None,
    mscale: float | None = None,
    mscale_all_dim: float | None = None,
) -> float:
    """The factor applied to cos/sin (equivalently, the softmax temperature). Kanana uses the default formula."""
    if attention_factor is not None:
        return float(attention_factor)

    def m(scale: float, k: float = 1.0) -> float:
        return 1.0 if scale <= 1 else 0.1 * k * math.log(scale) + 1.0

    if mscale and mscale_all_dim:
        return m(factor, mscale) / m(factor, mscale_all_dim)
    return m(factor)


def yarn_ramp(dim: int, low: float, high: float) -> list[float]:
    """0 for pairs that keep their frequency, 1 for pairs that are interpolated, linear in between."""
    if high == low:
        high = high + 0.001  # the reference code's guard against a zero-width ramp
    return [min(1.0, max(0.0, (i - low) / (high - low))) for i in range(dim // 2)]


def yarn_inv_freq(dim: int, theta: float, params: YarnParams, truncate: bool = True) -> list[float]:
    """Static YaRN inverse frequencies for one head (dim // 2 values)."""
    base = default_inv_freq(dim, theta)
    low, high = correction_range(
        params.beta_fast, params.beta_slow, dim, theta, params.original_max_position_embeddings, truncate
    )
    ramp = yarn_ramp(dim, low, high)
    return [f * (1.0 - r) + (f / params.factor) * r for f, r in zip(base, ramp)]


def max_ratio(unscaled: Sequence[float], scaled: Sequence[float]) -> float:
    """The largest unscaled/scaled frequency ratio: the factor by which the slowest pairs were interpolated."""
    return max(u / s for u, s in zip(unscaled, scaled))


def max_relative_difference(expected: Sequence[float], actual: Sequence[float]) -> float:
    if len(expected) != len(actual):
        return math.inf
    return max((abs(a - e) / abs(e) if e else abs(a)) for e, a in zip(expected, actual))


@dataclass(frozen=True)
class ExpectedRope:
    """What a config's YaRN block should produce, computed here: the reference for --check."""

    dim: int
    rope_theta: float
    params: YarnParams
    inv_freq: tuple[float, ...]
    attention_factor: float
    max_ratio: float
    low: float
    high: float

    def to_dict(self) -> dict:
        return {
            "dim": self.dim,
            "rope_theta": self.rope_theta,
            "params": self.params.to_dict(),
            "inv_freq": list(self.inv_freq),
            "attention_factor": self.attention_factor,
            "max_ratio": self.max_ratio,
            "low": self.low,
            "high": self.high,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "ExpectedRope":
        data = dict(data)
        data["params"] = YarnParams.from_dict(data["params"])
        data["inv_freq"] = tuple(data["inv_freq"])
        return cls(**data)


def expected_rope(config: Mapping[str, Any]) -> ExpectedRope:
    """The YaRN frequencies the config *means* (factor and ramp over the declared original context)."""
    settings = RopeSettings.from_config(config)
    params = settings.yarn_params(strict=True)
    block = config.get(settings.source_key) or {}
    dim = rotary_dim(config)
    truncate = block.get("truncate", True) is not False
    inv = yarn_inv_freq(dim, settings.rope_theta, params, truncate)
    low, high = correction_range(
        params.beta_fast, params.beta_slow, dim, settings.rope_theta, params.original_max_position_embeddings, truncate
    )
    attention = yarn_attention_factor(
        params.factor, block.get("attention_factor"), block.get("mscale"), block.get("mscale_all_dim")
    )
    return ExpectedRope(
        dim=dim,
        rope_theta=settings.rope_theta,
        params=params,
        inv_freq=tuple(inv),
        attention_factor=attention,
        max_ratio=max_ratio(default_inv_freq(dim, settings.rope_theta), inv),
        low=low,
        high=high,
    )
