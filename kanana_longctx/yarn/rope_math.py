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
from kanana_longctx.yarn.params import mscale as _mscale

# Far above any real head (256 in Gemma, 64 rotary channels in DeepSeek's MLA): a bound that keeps a malformed
# config from allocating millions of frequencies.
MAX_ROTARY_DIM = 8192


def _positive(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value > 0


def is_mla(config: Mapping[str, Any]) -> bool:
    """Multi-head latent attention (DeepSeek-V2/V3, Kanana-2 30B-A3B): a compressed KV (kv_lora_rank) whose rotary
    part is a separate qk_rope_head_dim per head."""
    return _positive(config.get("kv_lora_rank")) and _positive(config.get("qk_rope_head_dim"))


def rotary_dim(config: Mapping[str, Any], block: Mapping[str, Any] | None = None) -> int:
    """The number of rotated channels per head: qk_rope_head_dim for MLA (transformers sets head_dim to it),
    else head_dim (or hidden_size / heads), times partial_rotary_factor (top level, or inside `block`, the RoPE
    block being read, or inside rope_scaling / rope_parameters)."""
    if _positive(config.get("qk_rope_head_dim")):
        head_dim = config["qk_rope_head_dim"]
    elif _positive(config.get("head_dim")):
        head_dim = config["head_dim"]
    else:
        hidden, heads = config.get("hidden_size"), config.get("num_attention_heads")
        if not (_positive(hidden) and _positive(heads)):
            raise ConfigError("the config has neither 'head_dim' nor 'hidden_size' and 'num_attention_heads'")
        head_dim = hidden // heads
    partial = config.get("partial_rotary_factor")
    blocks = [block] if block is not None else [config.get("rope_scaling"), config.get("rope_parameters")]
    if partial is None:
        for candidate in blocks:
            if isinstance(candidate, dict) and candidate.get("partial_rotary_factor") is not None:
                partial = candidate["partial_rotary_factor"]
                break
    if partial is not None and (isinstance(partial, bool) or not isinstance(partial, (int, float))):
        raise ConfigError(f"partial_rotary_factor must be a number, got {partial!r}")
    scale = 1.0 if partial is None else float(partial)
    if not 0.0 < scale <= 1.0:
        raise ConfigError(f"partial_rotary_factor must be in (0, 1], got {partial!r}")
    dim = int(head_dim * scale)
    if dim < 2 or dim % 2 or dim > MAX_ROTARY_DIM:
        raise ConfigError(f"rotary dimension {dim} is not an even number between 2 and {MAX_ROTARY_DIM}")
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
    """The factor applied to cos/sin. Kanana 1.5 uses the default 0.1 ln(s) + 1; Kanana-2's MLA recipe sets
    mscale = mscale_all_dim = 1, which makes this 1 and moves the temperature into the softmax scale
    (`YarnParams.softmax_scale_factor`)."""
    if attention_factor is not None:
        return float(attention_factor)
    if mscale and mscale_all_dim:
        return _mscale(factor, mscale) / _mscale(factor, mscale_all_dim)
    return _mscale(factor)


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
    softmax_scale_factor: float = 1.0  # MLA: what DeepSeek-style attention multiplies its softmax scale by
    layer_type: str | None = None

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
            "softmax_scale_factor": self.softmax_scale_factor,
            "layer_type": self.layer_type,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "ExpectedRope":
        data = dict(data)
        data["params"] = YarnParams.from_dict(data["params"])
        data["inv_freq"] = tuple(data["inv_freq"])
        return cls(**data)


def rope_block(config: Mapping[str, Any], settings: RopeSettings) -> Mapping[str, Any]:
    """The dict a RopeSettings was read from (empty when the config has none)."""
    key = settings.source_key or ""
    if key.startswith("rope_parameters.") and settings.layer_type is not None:
        return config["rope_parameters"].get(settings.layer_type) or {}
    block = config.get(key) if key else None
    return block if isinstance(block, dict) else {}


def expected_rope(config: Mapping[str, Any], layer_type: str | None = None) -> ExpectedRope:
    """The YaRN frequencies the config *means* (factor and ramp over the declared original context), for its only
    RoPE block or for one per-layer-type block."""
    settings = RopeSettings.from_config(config, layer_type)
    params = settings.yarn_params(strict=True)
    block = rope_block(config, settings)
    dim = rotary_dim(config, block if layer_type is not None else None)
    truncate = block.get("truncate", True) is not False
    inv = yarn_inv_freq(dim, settings.rope_theta, params, truncate)
    low, high = correction_range(
        params.beta_fast, params.beta_slow, dim, settings.rope_theta, params.original_max_position_embeddings, truncate
    )
    attention = yarn_attention_factor(
        params.factor, settings.attention_factor, params.mscale, params.mscale_all_dim
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
        softmax_scale_factor=params.softmax_scale_factor if is_mla(config) else 1.0,
        layer_type=layer_type,
    )
