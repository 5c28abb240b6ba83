"""YaRN parameters and the RoPE settings a config.json declares.

Usage: params = YarnParams(factor=4.4); params.effective_context  # 144179

`YarnParams` carries the numbers a YaRN recipe publishes (Kanana 1.5: factor 4.4 over the 32,768 trained tokens,
beta_fast 64, beta_slow 2; Kanana-2's MLA model adds DeepSeek's mscale / mscale_all_dim pair) and validates them,
bounds included. `RopeSettings.from_config` reads what a config dict declares, the way transformers 5 resolves it
(`rope_scaling` wins over `rope_parameters`; a top-level `rope_theta` and `original_max_position_embeddings` are
taken into account; per-layer-type `rope_parameters` are read one layer type at a time), without importing
transformers.
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

# Bounds, checked before anything is written. Published YaRN factors go up to 32 (Yarn-Llama-2 128K from 4K);
# 128 leaves room without letting an absurd value (1e308) reach the math. Lengths up to 2**24 tokens cover every
# released context with margin; the mscale pair is a small positive multiplier (DeepSeek uses 0.707 and 1.0).
MAX_FACTOR = 128.0
MAX_CONTEXT = 1 << 24
MAX_BETA = 4096.0
MAX_MSCALE = 10.0
MAX_ROPE_THETA = 1e15

# Every scaling type transformers knows besides the two we handle; any of them is "existing scaling" to refuse.
NO_SCALING_TYPES = frozenset({"default", "none"})
YARN_TYPE = "yarn"


def finite_number(value: Any, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise BadInput(f"{name} must be a finite number, got {value!r}")
    return float(value)


def positive_int(value: Any, name: str, limit: int = MAX_CONTEXT) -> int:
    """A positive integer no larger than `limit` (a float like 32768.0 is accepted as 32768)."""
    if isinstance(value, float) and math.isfinite(value) and value.is_integer():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise BadInput(f"{name} must be a positive integer, got {value!r}")
    if value > limit:
        raise BadInput(f"{name} must be at most {limit}, got {value}")
    return value


def rope_theta_value(value: Any, name: str = "rope_theta") -> float:
    theta = finite_number(value, name)
    if not 1.0 < theta <= MAX_ROPE_THETA:
        raise BadInput(f"{name} must be greater than 1 and at most {MAX_ROPE_THETA:g}, got {value!r}")
    return theta


def mscale(scale: float, k: float = 1.0) -> float:
    """YaRN's attention-temperature term 0.1 k ln(s) + 1 (1 for s <= 1), as DeepSeek's `yarn_get_mscale`."""
    return 1.0 if scale <= 1 else 0.1 * k * math.log(scale) + 1.0


def _optional_mscale(value: Any, name: str) -> float | None:
    if value is None:
        return None
    number = finite_number(value, name)
    if not 0.0 < number <= MAX_MSCALE:
        raise BadInput(f"{name} must be greater than 0 and at most {MAX_MSCALE:g}, got {value!r}")
    return number


@dataclass(frozen=True)
class YarnParams:
    """Static YaRN parameters. Construction validates (bounds included); bad values raise BadInput (exit 2).

    `mscale` / `mscale_all_dim` are DeepSeek's pair (Kanana-2's MLA recipe sets both to 1.0); None leaves them out
    of the written block, which keeps YaRN's default attention factor 0.1 ln(s) + 1."""

    factor: float = DEFAULT_FACTOR
    original_max_position_embeddings: int = DEFAULT_ORIGINAL_MAX_POSITION_EMBEDDINGS
    beta_fast: float = DEFAULT_BETA_FAST
    beta_slow: float = DEFAULT_BETA_SLOW
    mscale: float | None = None
    mscale_all_dim: float | None = None

    def __post_init__(self) -> None:
        factor = finite_number(self.factor, "factor")
        beta_fast = finite_number(self.beta_fast, "beta_fast")
        beta_slow = finite_number(self.beta_slow, "beta_slow")
        original = positive_int(self.original_max_position_embeddings, "original_max_position_embeddings")
        if factor <= 1.0:
            raise BadInput(f"factor must be greater than 1 (YaRN stretches the context), got {self.factor}")
        if factor > MAX_FACTOR:
            raise BadInput(f"factor must be at most {MAX_FACTOR:g}, got {self.factor}")
        if beta_slow <= 0:
            raise BadInput(f"beta_slow must be greater than 0, got {self.beta_slow}")
        if beta_fast <= beta_slow:
            raise BadInput(f"beta_fast ({self.beta_fast}) must be greater than beta_slow ({self.beta_slow})")
        if beta_fast > MAX_BETA:
            raise BadInput(f"beta_fast must be at most {MAX_BETA:g}, got {self.beta_fast}")
        # Normalise types so that equal parameters compare and serialise equally (64 and 64.0 are the same beta).
        object.__setattr__(self, "factor", factor)
        object.__setattr__(self, "beta_fast", beta_fast)
        object.__setattr__(self, "beta_slow", beta_slow)
        object.__setattr__(self, "original_max_position_embeddings", original)
        object.__setattr__(self, "mscale", _optional_mscale(self.mscale, "mscale"))
        object.__setattr__(self, "mscale_all_dim", _optional_mscale(self.mscale_all_dim, "mscale_all_dim"))

    @property
    def attention_factor(self) -> float:
        """The factor on cos/sin: 0.1 ln(s) + 1 (1.148160 for s = 4.4), or with DeepSeek's pair
        mscale(s, mscale) / mscale(s, mscale_all_dim) (1.0 when the two are equal), as transformers computes it."""
        if self.mscale and self.mscale_all_dim:
            return mscale(self.factor, self.mscale) / mscale(self.factor, self.mscale_all_dim)
        return mscale(self.factor)

    @property
    def softmax_scale_factor(self) -> float:
        """What DeepSeek-style attention multiplies its softmax scale by: mscale(s, mscale_all_dim) squared
        (1.296477 for s = 4, mscale_all_dim = 1); 1 without mscale_all_dim. Other attentions ignore the key."""
        return mscale(self.factor, self.mscale_all_dim) ** 2 if self.mscale_all_dim else 1.0

    def summary(self) -> str:
        """One line for users: 'factor 4.4 over 32768, beta_fast 64, beta_slow 2'."""
        text = (
            f"factor {self.factor:g} over {self.original_max_position_embeddings}, beta_fast {self.beta_fast:g}, "
            f"beta_slow {self.beta_slow:g}"
        )
        if self.mscale is not None or self.mscale_all_dim is not None:
            text += f", mscale {_fmt(self.mscale)}, mscale_all_dim {_fmt(self.mscale_all_dim)}"
        return text

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
        if not isinstance(data, Mapping):
            raise BadInput(f"YaRN parameters must be an object, got {type(data).__name__}")
        known = {"factor", "original_max_position_embeddings", "beta_fast", "beta_slow", "mscale", "mscale_all_dim"}
        return cls(**{k: v for k, v in data.items() if k in known})


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:g}"


def _rope_type(block: Mapping[str, Any] | None) -> str:
    if not block:
        return "default"
    return str(block.get("rope_type", block.get("type", "default")))


def layer_types_of(config: Mapping[str, Any]) -> tuple[str, ...]:
    """The distinct attention types `layer_types` names, in order of first appearance (() when it has none)."""
    listed = config.get("layer_types")
    if not isinstance(listed, list):
        return ()
    return tuple(dict.fromkeys(t for t in listed if isinstance(t, str)))


def nested_rope_keys(config: Mapping[str, Any]) -> tuple[str, ...]:
    """The layer types `rope_parameters` is keyed by (transformers 5's per-layer-type form), or () for one block.

    As transformers decides it: only keys that `layer_types` names count. A dict of blocks without `layer_types`
    is refused, because transformers would read it as one (broken) block."""
    parameters = config.get("rope_parameters")
    if not isinstance(parameters, dict):
        return ()
    types = layer_types_of(config)
    keys = tuple(k for k in parameters if k in types)
    stray = [k for k, v in parameters.items() if isinstance(v, dict) and k not in types]
    if stray and not keys:
        raise ConfigError(
            f"'rope_parameters' holds per-layer blocks ({', '.join(stray)}) but 'layer_types' does not name them; "
            "transformers would read them as one block"
        )
    return keys


@dataclass(frozen=True)
class RopeSettings:
    """The RoPE settings a config dict declares for one block (before any library interprets them).

    `layer_type` is None for a config with one block for all layers, else the layer type whose
    per-layer-type `rope_parameters` block was read."""

    rope_type: str
    rope_theta: float
    theta_source: str  # "top-level", "rope_parameters", or "default" when the file has none
    max_position_embeddings: int | None
    factor: float | None = None
    original_max_position_embeddings: int | None = None
    beta_fast: float | None = None
    beta_slow: float | None = None
    source_key: str | None = None  # which block was read: rope_scaling, rope_parameters, rope_parameters.<type>
    has_rope_scaling: bool = False
    has_rope_parameters: bool = False
    top_level_original: int | None = None  # a top-level original_max_position_embeddings, which overrides
    mscale: float | None = None
    mscale_all_dim: float | None = None
    attention_factor: float | None = None
    layer_type: str | None = None

    @property
    def is_yarn(self) -> bool:
        return self.rope_type == YARN_TYPE

    @property
    def is_scaled(self) -> bool:
        return self.rope_type not in NO_SCALING_TYPES

    def yarn_params(self, strict: bool = False) -> YarnParams | None:
        """The YarnParams this block declares; None when it is not YaRN, or (strict) ConfigError when the block
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
                mscale=self.mscale,
                mscale_all_dim=self.mscale_all_dim,
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
    def from_config(cls, config: Mapping[str, Any], layer_type: str | None = None) -> "RopeSettings":
        """Read one RoPE block: the config's only block, or (layer_type) one per-layer-type block."""
        scaling = config.get("rope_scaling")
        parameters = config.get("rope_parameters")
        for key, value in (("rope_scaling", scaling), ("rope_parameters", parameters)):
            if value is not None and not isinstance(value, dict):
                raise ConfigError(f"'{key}' must be an object or null, got {type(value).__name__}")
        nested = nested_rope_keys(config)
        if layer_type is not None:
            return cls._from_nested(config, layer_type, nested)
        if nested and not scaling:
            raise ConfigError(
                f"per-layer-type rope_parameters ({', '.join(nested)}): read one layer type at a time"
            )
        # transformers 5: rope_scaling, when present and non-empty, replaces rope_parameters entirely.
        if scaling:
            block, source = scaling, "rope_scaling"
        else:
            block, source = (parameters, "rope_parameters") if parameters else (None, None)
        if "rope_theta" in config:
            theta, theta_source = config["rope_theta"], "top-level"
        elif parameters and "rope_theta" in parameters and not nested:
            theta, theta_source = parameters["rope_theta"], "rope_parameters"
        else:
            theta, theta_source = DEFAULT_ROPE_THETA, "default"
        top_original = config.get("original_max_position_embeddings")
        block = block or {}
        original = top_original if top_original is not None else block.get("original_max_position_embeddings")
        return cls._build(config, block, theta, theta_source, source, original, top_original, None)

    @classmethod
    def _from_nested(cls, config: Mapping[str, Any], layer_type: str, nested: tuple[str, ...]) -> "RopeSettings":
        if layer_type not in nested:
            raise ConfigError(f"rope_parameters has no block for the layer type '{layer_type}'")
        block = config["rope_parameters"][layer_type]
        if block is not None and not isinstance(block, dict):
            raise ConfigError(f"'rope_parameters.{layer_type}' must be an object or null, got {type(block).__name__}")
        block = block or {}
        if "rope_theta" in block:
            theta, theta_source = block["rope_theta"], f"rope_parameters.{layer_type}"
        elif "rope_theta" in config:
            theta, theta_source = config["rope_theta"], "top-level"
        else:
            theta, theta_source = DEFAULT_ROPE_THETA, "default"
        # transformers applies a top-level original_max_position_embeddings only to a single block.
        source = f"rope_parameters.{layer_type}"
        return cls._build(
            config, block, theta, theta_source, source, block.get("original_max_position_embeddings"), None, layer_type
        )

    @classmethod
    def _build(cls, config, block, theta, theta_source, source, original, top_original, layer_type) -> "RopeSettings":
        mpe = config.get("max_position_embeddings")
        return cls(
            rope_type=_rope_type(block),
            rope_theta=rope_theta_value(theta, "rope_theta"),
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
            mscale=_maybe_float(block.get("mscale")),
            mscale_all_dim=_maybe_float(block.get("mscale_all_dim")),
            attention_factor=_maybe_float(block.get("attention_factor")),
            layer_type=layer_type,
        )


def _maybe_float(value: Any) -> float | None:
    if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
        return float(value)
    return None


def _maybe_int(value: Any) -> int | None:
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, float) and math.isfinite(value) and value.is_integer():
        return int(value)
    return None
