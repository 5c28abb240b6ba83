"""Verify with the installed transformers that a config's YaRN really takes effect.

Usage: report = check_config_dict(json.load(open("config.json"))); report.passed, report.problems

The config is loaded with the installed transformers (config only, no weights, exactly what from_pretrained does
after reading the file), the rotary inverse frequencies and attention factor are computed by
`transformers.modeling_rope_utils.ROPE_INIT_FUNCTIONS[rope_type](config, "cpu")`, and compared with the project's
own implementation (rope_math.py). The transformers 4.51-4.55 trap (YaRN silently off when
max_position_embeddings equals original_max_position_embeddings) is decided both from the version number and from
the numbers themselves. transformers and torch are imported only inside the functions.
"""

from __future__ import annotations

import logging
import math
import re
import warnings
from dataclasses import asdict, dataclass
from typing import Any, Mapping

from kanana_longctx.errors import BadInput, ConfigError, one_line
from kanana_longctx.yarn.params import DEFAULT_ROPE_THETA, RopeSettings
from kanana_longctx.yarn.rope_math import (
    ExpectedRope,
    default_inv_freq,
    expected_rope,
    is_mla,
    max_ratio,
    max_relative_difference,
    rotary_dim,
)

# transformers computes in float32; the float32 rounding of theta ** (2i/d) alone reaches ~1e-6 relative for
# theta ~ 1e6. Any real misconfiguration moves frequencies by percent (or by the whole factor), so 1e-5 separates
# "the same formula" from "a different formula" with a wide margin.
INV_FREQ_RTOL = 1e-5
ATTENTION_RTOL = 1e-6
TRAP_RANGE = ((4, 51), (4, 56))  # [4.51.0, 4.56.0)
UPGRADE = "pip install 'transformers>=4.56'"


def version_tuple(version: str) -> tuple[int, int]:
    match = re.match(r"(\d+)\.(\d+)", version)
    return (int(match.group(1)), int(match.group(2))) if match else (0, 0)


def in_trap_range(version: str) -> bool:
    """transformers 4.51.0-4.55.x recompute the YaRN factor as max_position_embeddings / original (PR #40320)."""
    return TRAP_RANGE[0] <= version_tuple(version) < TRAP_RANGE[1]


def _transformers():
    try:
        import transformers
    except ImportError:  # pragma: no cover - a hard dependency, but say so clearly if it is broken
        raise BadInput("--check needs transformers: pip install 'transformers>=4.56'") from None
    return transformers


def load_transformers_config(config: Mapping[str, Any]):
    """A transformers config object for this dict (the model_type's class; else DeepSeek-V3's for MLA, Llama's)."""
    transformers = _transformers()
    from transformers.models.auto.configuration_auto import CONFIG_MAPPING

    model_type = config.get("model_type")
    if model_type is not None and not isinstance(model_type, str):
        raise ConfigError(f"'model_type' must be a string, got {type(model_type).__name__}")
    if model_type in CONFIG_MAPPING:
        config_class = CONFIG_MAPPING[model_type]
    else:  # remote code: read it as the closest transformers class (MLA's rotary part is qk_rope_head_dim wide)
        config_class = CONFIG_MAPPING["deepseek_v3" if is_mla(config) else "llama"]
    try:
        return config_class.from_dict(dict(config))
    except Exception as exc:  # transformers raises ValueError/KeyError/TypeError for configs it rejects
        raise ConfigError(
            f"transformers {transformers.__version__} cannot load this config: {type(exc).__name__}: {one_line(exc)}"
        ) from None


@dataclass(frozen=True)
class TransformersRope:
    """What the installed transformers computes from a config."""

    version: str
    config_class: str
    rope_type: str
    rope_theta: float
    max_position_embeddings: int | None
    original_max_position_embeddings: int | None  # as transformers resolved it (None for plain RoPE)
    dim: int
    inv_freq: tuple[float, ...]
    attention_factor: float
    max_ratio: float  # unscaled / scaled, with transformers' own theta: the factor it effectively applies
    warnings: tuple[str, ...] = ()

    def to_dict(self) -> dict:
        data = asdict(self)
        data["inv_freq"] = list(self.inv_freq)
        data["warnings"] = list(self.warnings)
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "TransformersRope":
        return cls(**{**data, "inv_freq": tuple(data["inv_freq"]), "warnings": tuple(data.get("warnings", ()))})


class _Capture(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage().strip().splitlines()[0])


def _resolved_rope(config, major: int, layer_type: str | None = None) -> dict:
    """The RoPE dict transformers itself will use: rope_parameters in v5 (standardised; one layer type's block for
    per-layer-type configs), rope_scaling in v4."""
    if major >= 5:
        params = getattr(config, "rope_parameters", None) or {}
        if layer_type is not None:
            block = params.get(layer_type)
            if not isinstance(block, dict):
                raise ConfigError(f"transformers did not keep a RoPE block for the {layer_type} layers")
            return dict(block)
        if any(isinstance(v, dict) for v in params.values()):
            raise ConfigError("transformers read per-layer-type rope_parameters; check them one layer type at a time")
        return dict(params)
    if layer_type is not None:
        raise ConfigError("per-layer-type rope_parameters need transformers 5; this transformers cannot read them")
    scaling = dict(getattr(config, "rope_scaling", None) or {})
    scaling.setdefault("rope_type", scaling.get("type", "default"))
    scaling["rope_theta"] = getattr(config, "rope_theta", DEFAULT_ROPE_THETA)
    return scaling


def transformers_rope(config_dict: Mapping[str, Any], layer_type: str | None = None) -> TransformersRope:
    """Load `config_dict` with the installed transformers and compute its inverse frequencies and attention factor
    (for one layer type of a per-layer-type config when `layer_type` is given).

    transformers' warnings are captured (returned, not printed): they are part of the diagnosis.
    """
    transformers = _transformers()
    from transformers.utils import logging as hf_logging

    capture = _Capture()
    library_logger = logging.getLogger("transformers")
    library_logger.addHandler(capture)
    hf_logging.disable_default_handler()
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            config = load_transformers_config(config_dict)
            major = version_tuple(transformers.__version__)[0]
            rope = _resolved_rope(config, major, layer_type)
            rope_type = str(rope.get("rope_type", "default"))
            theta = float(rope.get("rope_theta", DEFAULT_ROPE_THETA))
            dim = rotary_dim(config_dict, rope if layer_type is not None else None)
            inv_freq, attention = _compute(config, rope_type, dim, theta, layer_type)
    finally:
        hf_logging.enable_default_handler()
        library_logger.removeHandler(capture)
    messages = capture.messages + [str(w.message).strip().splitlines()[0] for w in caught if str(w.message).strip()]
    unscaled = default_inv_freq(len(inv_freq) * 2, theta)
    return TransformersRope(
        version=transformers.__version__,
        config_class=type(config).__name__,
        rope_type=rope_type,
        rope_theta=theta,
        max_position_embeddings=getattr(config, "max_position_embeddings", None),
        original_max_position_embeddings=rope.get("original_max_position_embeddings"),
        dim=dim,
        inv_freq=tuple(inv_freq),
        attention_factor=float(attention),
        max_ratio=max_ratio(unscaled, inv_freq),
        warnings=tuple(dict.fromkeys(messages)),
    )


def _compute(config, rope_type: str, dim: int, theta: float, layer_type: str | None) -> tuple[list[float], float]:
    from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS

    function = ROPE_INIT_FUNCTIONS.get(rope_type)
    if function is None:
        if rope_type != "default":
            raise ConfigError(f"the installed transformers does not know the rope type '{rope_type}'")
        # transformers 5 keeps plain RoPE in each model class; it is theta ** (-2i/d) with the theta it resolved.
        return default_inv_freq(dim, theta), 1.0
    # (config, device) works for every signature: 4.45-4.57 (config, device, seq_len=None, **kwargs) and
    # 5.x (config, device=None, seq_len=None, layer_type=None); layer_type only exists (and is only passed) in 5.x.
    try:
        if layer_type is None:
            inv_freq, attention = function(config, "cpu")
        else:
            inv_freq, attention = function(config, "cpu", layer_type=layer_type)
    except Exception as exc:  # a block transformers cannot compute (missing keys, wrong lengths)
        raise ConfigError(f"transformers cannot compute '{rope_type}' RoPE for this config: {one_line(exc)}") from None
    return [float(x) for x in inv_freq.double().tolist()], float(attention)


@dataclass(frozen=True)
class CheckReport:
    """The verdict of --check, with both sides' numbers."""

    passed: bool
    actual: TransformersRope
    expected: ExpectedRope | None
    settings: RopeSettings
    problems: tuple[str, ...]
    fixes: tuple[str, ...]
    inv_freq_max_rel_diff: float | None
    trap: bool

    def to_dict(self) -> dict:
        return {
            "passed": self.passed,
            "actual": self.actual.to_dict(),
            "expected": None if self.expected is None else self.expected.to_dict(),
            "settings": self.settings.to_dict(),
            "problems": list(self.problems),
            "fixes": list(self.fixes),
            "inv_freq_max_rel_diff": self.inv_freq_max_rel_diff,
            "trap": self.trap,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "CheckReport":
        return cls(
            passed=data["passed"],
            actual=TransformersRope.from_dict(data["actual"]),
            expected=None if data["expected"] is None else ExpectedRope.from_dict(data["expected"]),
            settings=RopeSettings.from_dict(data["settings"]),
            problems=tuple(data["problems"]),
            fixes=tuple(data["fixes"]),
            inv_freq_max_rel_diff=data["inv_freq_max_rel_diff"],
            trap=data["trap"],
        )


def _rel(a: float, b: float) -> float:
    return abs(a - b) / abs(b) if b else abs(a)


def _check_plain(settings: RopeSettings, actual: TransformersRope) -> CheckReport:
    """A layer type that declares plain RoPE (a sliding-window layer type left without YaRN): transformers must
    compute plain RoPE with the declared theta there."""
    problems: list[str] = []
    where = f" for the {settings.layer_type} layers" if settings.layer_type else ""
    unscaled = default_inv_freq(len(actual.inv_freq) * 2, settings.rope_theta)
    diff = max_relative_difference(unscaled, actual.inv_freq)
    if actual.rope_type not in ("default", "none") or diff > INV_FREQ_RTOL or abs(actual.attention_factor - 1) > 1e-9:
        problems.append(
            f"transformers computes '{actual.rope_type}' RoPE{where} (attention factor "
            f"{actual.attention_factor:.6f}), not the plain RoPE the file declares"
        )
    if _rel(actual.rope_theta, settings.rope_theta) > 1e-9:
        problems.append(
            f"transformers uses rope_theta {actual.rope_theta:g}{where}; the file means {settings.rope_theta:g}"
        )
    fixes = ("re-run `kanana-longctx config MODEL --yarn` and check again; see docs/yarn.md",) if problems else ()
    return CheckReport(not problems, actual, None, settings, tuple(problems), fixes, diff, False)


def check_config_dict(
    config: Mapping[str, Any], layer_type: str | None = None, require_yarn: bool = True
) -> CheckReport:
    """Compare transformers' rotary frequencies and attention factor for `config` (one layer type's block when
    given) with rope_math's. With require_yarn False a block without YaRN passes when transformers computes the
    plain RoPE it declares."""
    settings = RopeSettings.from_config(config, layer_type)
    actual = transformers_rope(config, layer_type)
    problems: list[str] = []
    fixes: list[str] = []
    if not settings.is_yarn and not require_yarn and not settings.is_scaled:
        return _check_plain(settings, actual)
    if not settings.is_yarn:
        problems.append(f"the config does not declare YaRN (rope type: {settings.rope_type})")
        fixes.append("apply it with: kanana-longctx config MODEL --yarn")
        return CheckReport(False, actual, None, settings, tuple(problems), tuple(fixes), None, False)
    expected = expected_rope(config, layer_type)
    params = expected.params
    diff = max_relative_difference(expected.inv_freq, actual.inv_freq)
    mpe = settings.max_position_embeddings
    implicit = (mpe or params.original_max_position_embeddings) / params.original_max_position_embeddings
    reads_yarn = actual.rope_type == "yarn"
    version_trap = in_trap_range(actual.version) and _rel(implicit, params.factor) > 1e-4
    # YaRN read, but nothing interpolated and no attention scaling: the trap, whatever the version says. (An
    # attention factor of 1 is only suspicious when the block means another one: DeepSeek's equal mscale pair
    # means exactly 1.)
    flat_attention = abs(actual.attention_factor - 1.0) < 1e-9 and abs(expected.attention_factor - 1.0) > 1e-9
    numbers_trap = reads_yarn and (actual.max_ratio < 1 + 1e-6 or flat_attention)
    trap = reads_yarn and (version_trap or numbers_trap)
    if not reads_yarn:
        why = " (transformers 4 reads only rope_scaling)" if version_tuple(actual.version) < (5, 0) else ""
        problems.append(f"transformers {actual.version} reads rope type '{actual.rope_type}', not 'yarn'{why}")
        fixes.append("re-run `kanana-longctx config MODEL --yarn`: it writes rope_scaling and rope_parameters")
    elif trap:
        problems.append(
            f"YaRN is silently off in transformers {actual.version}: it applies factor {actual.max_ratio:.6g} and "
            f"attention factor {actual.attention_factor:.6f} instead of {params.factor:g} and "
            f"{expected.attention_factor:.6f}"
            + (
                f" (4.51-4.55 recompute the factor as max_position_embeddings / original = {implicit:g})"
                if version_trap
                else ""
            )
        )
        fixes.append(
            f"{UPGRADE}; or, for this transformers only, re-run with --yarn --max-positions "
            f"{params.effective_context}"
        )
    scaled_as_expected = reads_yarn and not trap
    if _rel(actual.rope_theta, expected.rope_theta) > 1e-9:
        problems.append(f"transformers uses rope_theta {actual.rope_theta:g}; the file means {expected.rope_theta:g}")
        fixes.append("keep rope_theta at the top level and inside rope_parameters (re-run --yarn)")
    if len(actual.inv_freq) != len(expected.inv_freq):
        problems.append(f"transformers rotates {2 * len(actual.inv_freq)} dimensions, expected {expected.dim}")
    elif diff > INV_FREQ_RTOL and scaled_as_expected:
        problems.append(f"inverse frequencies differ from the YaRN formula by up to {diff:.3g} (relative)")
        if version_tuple(actual.version) < (4, 51) and mpe and mpe != params.original_max_position_embeddings:
            fixes.append(
                f"transformers <= 4.50 computes the ramp from max_position_embeddings ({mpe}): keep it at "
                f"{params.original_max_position_embeddings}, or {UPGRADE}"
            )
    if scaled_as_expected and _rel(actual.attention_factor, expected.attention_factor) > ATTENTION_RTOL:
        problems.append(
            f"attention factor {actual.attention_factor:.6f} differs from the expected {expected.attention_factor:.6f}"
        )
    if problems and not fixes:
        fixes.append("re-run `kanana-longctx config MODEL --yarn` and check again; see docs/yarn.md")
    return CheckReport(not problems, actual, expected, settings, tuple(problems), tuple(fixes), diff, trap)


def effective_context(settings: RopeSettings, actual: TransformersRope) -> int | None:
    """The context transformers' frequencies cover: original x the factor it effectively applies."""
    original = settings.original_max_position_embeddings or settings.max_position_embeddings
    if original is None or not math.isfinite(actual.max_ratio):
        return None
    return int(original * actual.max_ratio + 1e-6)
