"""YaRN parameters and the RoPE settings a config.json declares.

Usage: params = YarnParams(factor=4.4); params.effective_context  # 144179

`YarnParams` carries the four numbers Kanana's README publishes (factor 4.4 over the 32,768 trained tokens,
beta_fast 64, beta_slow 2) and validates them. `RopeSettings.from_config` reads what a config dict declares, the way
transformers 5 resolves it (`rope_scaling` wins over `rope_parameters`; a top-level `rope_theta` and
`original_max_position_embeddings` are taken into account), without importing transformers.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any, Mapping

from kanana_longctx.errors import BadInput, ConfigError

DEFAULT_FACTOR = 4.4
DEFAULT_ORIGINAL_MAX_POSITION_EMBEDDINGS = 32768
DEFAULT_BETA_FAST = 64.0
DEFAULT_BETA_SLOW = 2.0
# What transformers uses when a config has no rope_theta anywhere (LlamaConfig and RotaryEmbeddingConfigMixin).
DEFAULT_ROPE_THETA = 10000.0

# Every scaling type transformers knows besides the two we handle; any of them is "existing scaling" to refuse.
NO_SCALING_TYPES = frozenset({"default", "none"})
YARN_TYPE = "yarn"


def finite_number(value: Any, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise BadInput(f"{name} must be a finite number, got {value!r}")
    return float(value)


def _positive_int(value: Any, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        if isinstance(value, float) and value.is_integer() and value > 0:
            return int(value)
        raise BadInput(f"{name} must be a positive integer, got {value!r}")
    return value


@dataclass(frozen=True)
class YarnParams:
    """Static YaRN as Kanana publishes it. Construction validates; bad values raise BadInput (exit 2)."""

    factor: float = DEFAULT_FACTOR
    original_max_position_embeddings: int = DEFAULT_ORIGINAL_MAX_POSITION_EMBEDDINGS
    beta_fast: float = DEFAULT_BETA_FAST
    beta_slow: float = DEFAULT_BETA_SLOW

    def __post_init__(self) -> None:
        factor = finite_number(self.factor, "factor")
        beta_fast = finite_number(self.beta_fast, "beta_fast")
        beta_slow = finite_number(self.beta_slow, "beta_slow")
        original = _positive_int(self.original_max_position_embeddings, "original_max_position_embeddings")
        if factor <= 1.0:
            raise BadInput(f"factor must be greater than 1 (YaRN stretches the context), got {self.factor}")
        if beta_slow <= 0:
            raise BadInput(f"beta_slow must be greater than 0, got {self.beta_slow}")
        if beta_fast <= beta_slow:
            raise BadInput(f"beta_fast ({self.beta_fast}) must be greater than beta_slow ({self.beta_slow})")
        # Normalise types so that equal parameters compare and serialise equally (64 and 64.0 are the same beta).
        object.__setattr__(self, "factor", factor)
        object.__setattr__(self, "beta_fast", beta_fast)
        object.__setattr__(self, "beta_slow", beta_slow)
        object.__setattr__(self, "original_max_position_embeddings", original)

    @property
    def attention_factor(self) -> float:
        """YaRN's default attention (mscale) factor: 0.1 ln(s) + 1, i.e. 1.148160 for s = 4.4."""
        return 0.1 * math.log(self.factor) + 1.0

    @property
    def effective_context(self) -> int:
        """original x factor, rounded down: 144179 tokens for 32768 x 4.4."""
        return int(self.original_max_position_embeddings * self.factor)

    @property
    def serve_context(self) -> int:
        """The context to ask an engine for: whole multiples of the trained length inside the YaRN range
        (131072 = 128K for 4.4), so that the served length is a round number the model was stretched to cover."""
        return self.original_max_position_embeddings * max(1, math.floor(self.factor))

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "YarnParams":
        known = {"factor", "original_max_position_embeddings", "beta_fast", "beta_slow"}
        return cls(**{k: v for k, v in data.items() if k in known})


def _rope_type(block: Mapping[str, Any] | None) -> str:
    if not block:
        return "default"
    return str(block.get("rope_type", block.get("type", "default")))


@dataclass(frozen=True)
class RopeSettings:
    """The RoPE settings a config dict declares (before any library interprets them)."""

    rope_type: str
    rope_theta: float
    theta_source: str  # "top-level", "rope_parameters", or "default" when the file has none
    max_position_embeddings: int | None
    factor: float | None = None
    original_max_position_embeddings: int | None = None
    beta_fast: float | None = None
    beta_slow: float | None = None
    source_key: str | None = None  # which block was read: rope_scaling or rope_parameters
    has_rope_scaling: bool = False
    has_rope_parameters: bool = False
    top_level_original: int | None = None  # a top-level original_max_position_embeddings, which overrides

    @property
    def is_yarn(self) -> bool:
        return self.rope_type == YARN_TYPE

    @property
    def is_scaled(self) -> bool:
        return self.rope_type not in NO_SCALING_TYPES

    def yarn_params(self, strict: bool = False) -> YarnParams | None:
        """The YarnParams this config declares; None when it is not YaRN, or (strict) ConfigError when its block
        is invalid. Missing betas take transformers' defaults (32/1), a missing original its max_position_embeddings,
        as transformers does."""
        if not self.is_yarn or self.factor is None:
            if strict:
                raise ConfigError(f"the config does not declare YaRN (rope type: {self.rope_type})")
            return None
        try:
            return YarnParams(
                factor=self.factor,
                original_max_position_embeddings=self.original_max_position_embeddings or self.max_position_embeddings,
                beta_fast=32.0 if self.beta_fast is None else self.beta_fast,
                beta_slow=1.0 if self.beta_slow is None else self.beta_slow,
            )
        except BadInput as exc:
            if strict:
                raise ConfigError(f"the config's YaRN block is invalid: {exc}") from None
            return None

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "RopeSettings":
        return cls(**dict(data))

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> "RopeSettings":
        scaling = config.get("rope_scaling")
        parameters = config.get("rope_parameters")
        for key, value in (("rope_scaling", scaling), ("rope_parameters", parameters)):
            if value is not None and not isinstance(value, dict):
                raise ConfigError(f"'{key}' must be an object or null, got {type(value).__name__}")
        if parameters and any(isinstance(v, dict) for v in parameters.values()):
            raise ConfigError("per-layer 'rope_parameters' (one block per attention type) are not supported")
        # transformers 5: rope_scaling, when present and non-empty, replaces rope_parameters entirely.
        if scaling:
            block, source = scaling, "rope_scaling"
        else:
            block, source = (parameters, "rope_parameters") if parameters else (None, None)
        if "rope_theta" in config:
            theta, theta_source = config["rope_theta"], "top-level"
        elif parameters and "rope_theta" in parameters:
            theta, theta_source = parameters["rope_theta"], "rope_parameters"
        else:
            theta, theta_source = DEFAULT_ROPE_THETA, "default"
        theta = finite_number(theta, "rope_theta")
        mpe = config.get("max_position_embeddings")
        top_original = config.get("original_max_position_embeddings")
        block = block or {}
        original = top_original if top_original is not None else block.get("original_max_position_embeddings")
        return cls(
            rope_type=_rope_type(block),
            rope_theta=theta,
            theta_source=theta_source,
            max_position_embeddings=mpe if isinstance(mpe, int) and not isinstance(mpe, bool) else None,
            factor=_maybe_float(block.get("factor")),
            original_max_position_embeddings=_maybe_int(original),
            beta_fast=_maybe_float(block.get("beta_fast")),
            beta_slow=_maybe_float(block.get("beta_slow")),
            source_key=source,
            has_rope_scaling="rope_scaling" in config,
            has_rope_parameters="rope_parameters" in config,
            top_level_original=_maybe_int(top_original),
        )


def _maybe_float(value: Any) -> float | None:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    return None


def _maybe_int(value: Any) -> int | None:
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return None
