"""The whole `--check`: every RoPE block of a config (check.py), plus what transformers' model classes do with it.

Usage: result = check_config(config_dict); result.passed, result.reports, result.probes

A config with one RoPE block gets one CheckReport; a per-layer-type config one per layer type, where layer types
left without YaRN (sliding-window ones) must compute the plain RoPE they declare, and at least one layer type must
carry YaRN. check.py compares `ROPE_INIT_FUNCTIONS` with our own YaRN; two things only the model classes decide:
- MLA (DeepSeek-style) attention multiplies its softmax scale by mscale(s, mscale_all_dim)**2 when its layers are
  built (transformers' `yarn_get_mscale`), which is where Kanana-2's MLA recipe puts YaRN's temperature. We build
  the model with one layer on the meta device (no memory, no weights) and read the attention's `scaling`.
- A per-layer-type config needs a model class that reads `rope_parameters[layer_type]`; Llama's, for one, reads a
  single block and fails. We build the model's own rotary-embedding class and read its per-layer-type buffers.
A model_type transformers does not know (remote code) cannot be probed: the probe says so (ok None); we never run
a checkpoint's own code. torch and transformers are imported inside the functions.
"""

from __future__ import annotations

import copy
import importlib
import logging
from dataclasses import asdict, dataclass
from typing import Any, Mapping, Sequence

from kanana_longctx.errors import one_line
from kanana_longctx.yarn.check import CheckReport, check_config_dict, load_transformers_config, transformers_rope
from kanana_longctx.yarn.params import YarnParams, nested_rope_keys
from kanana_longctx.yarn.rope_math import is_mla, max_relative_difference

SCALE_RTOL = 1e-6


@dataclass(frozen=True)
class ModelProbe:
    """One verification against a model class. ok is None when it could not be made."""

    name: str  # "softmax scale" | "rotary class"
    ok: bool | None
    detail: str
    layer_type: str | None = None
    expected: float | None = None
    actual: float | None = None

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "ModelProbe":
        return cls(**dict(data))


class _Quiet:
    """Silence transformers' logger while models are built (their warnings are not part of this verdict)."""

    def __enter__(self):
        self.logger = logging.getLogger("transformers")
        self.level = self.logger.level
        self.logger.setLevel(logging.ERROR)
        return self

    def __exit__(self, *exc) -> None:
        self.logger.setLevel(self.level)


def _known_model_type(config: Mapping[str, Any]) -> str | None:
    from transformers.models.auto.configuration_auto import CONFIG_MAPPING

    model_type = config.get("model_type")
    return model_type if isinstance(model_type, str) and model_type in CONFIG_MAPPING else None


def _unknown(name: str, config: Mapping[str, Any], layer_type: str | None = None) -> ModelProbe:
    return ModelProbe(
        name,
        None,
        f"not verified: model_type {config.get('model_type')!r} is not in transformers "
        "(its own remote code is not run)",
        layer_type,
    )


def softmax_probe(config: Mapping[str, Any], params: YarnParams) -> ModelProbe:
    """MLA: the attention's softmax scale over 1/sqrt(qk_head_dim), against params.softmax_scale_factor."""
    name = "softmax scale"
    if _known_model_type(config) is None:
        return _unknown(name, config)
    import torch
    from transformers import AutoModelForCausalLM

    qk_head_dim = int(config.get("qk_nope_head_dim") or 0) + int(config["qk_rope_head_dim"])
    small = copy.deepcopy(load_transformers_config(config))
    small.num_hidden_layers = 1
    if isinstance(getattr(small, "layer_types", None), list):
        small.layer_types = small.layer_types[:1]
    try:
        with _Quiet(), torch.device("meta"):
            model = AutoModelForCausalLM.from_config(small)
    except Exception as exc:  # no causal-LM class, or one that rejects the config
        why = f"{type(exc).__name__}: {one_line(exc)}"
        return ModelProbe(name, None, f"not verified: transformers cannot build this model ({why})")
    for module in model.modules():
        scaling = getattr(module, "scaling", None)
        if "Attention" in type(module).__name__ and isinstance(scaling, float):
            actual = scaling * qk_head_dim**0.5
            expected = params.softmax_scale_factor
            ok = abs(actual - expected) <= SCALE_RTOL * expected
            detail = f"{type(module).__name__} multiplies 1/sqrt({qk_head_dim}) by {actual:.6f}"
            return ModelProbe(name, ok, detail, None, expected, actual)
    return ModelProbe(name, None, "not verified: no attention module with a softmax scale was found")


def _rotary_class(config_obj):
    from transformers.models.auto.configuration_auto import model_type_to_module_name

    module_name = model_type_to_module_name(config_obj.model_type)
    module = importlib.import_module(f"transformers.models.{module_name}.modeling_{module_name}")
    prefix = type(config_obj).__name__.removesuffix("Config")
    candidates = [obj for key, obj in vars(module).items() if key.endswith("RotaryEmbedding") and isinstance(obj, type)]
    exact = [c for c in candidates if c.__name__ == f"{prefix}RotaryEmbedding"]
    return (exact or candidates or [None])[0]


def rotary_class_probes(config: Mapping[str, Any], layer_types: Sequence[str]) -> list[ModelProbe]:
    """Per-layer-type configs: does the model's own rotary class compute each layer type's block as
    ROPE_INIT_FUNCTIONS does? One probe per layer type."""
    name = "rotary class"
    if _known_model_type(config) is None:
        return [_unknown(name, config, t) for t in layer_types]
    config_obj = load_transformers_config(config)
    rotary_class = _rotary_class(config_obj)
    if rotary_class is None:
        detail = f"not verified: no rotary-embedding class for {config['model_type']}"
        return [ModelProbe(name, None, detail, t) for t in layer_types]
    try:
        with _Quiet():
            rotary = rotary_class(config=config_obj)
    except Exception as exc:
        why = f"{type(exc).__name__}: {one_line(exc)}"
        detail = f"{rotary_class.__name__} cannot read per-layer-type rope_parameters ({why})"
        return [ModelProbe(name, False, detail, t) for t in layer_types]
    probes = []
    for layer_type in layer_types:
        inv = getattr(rotary, f"{layer_type}_inv_freq", None)
        scaling = getattr(rotary, f"{layer_type}_attention_scaling", None)
        if inv is None or scaling is None:
            detail = f"{rotary_class.__name__} keeps no {layer_type} block: it uses one RoPE for every layer"
            probes.append(ModelProbe(name, False, detail, layer_type))
            continue
        reference = transformers_rope(config, layer_type)
        diff = max_relative_difference(reference.inv_freq, [float(x) for x in inv.double().tolist()])
        ok = diff <= SCALE_RTOL and abs(float(scaling) - reference.attention_factor) <= SCALE_RTOL
        detail = (
            f"{rotary_class.__name__}: attention factor {float(scaling):.6f}, inverse frequencies within {diff:.1e}"
        )
        probes.append(ModelProbe(name, ok, detail, layer_type, reference.attention_factor, float(scaling)))
    return probes


@dataclass(frozen=True)
class ConfigCheck:
    """The verdict of --check for a whole config."""

    reports: tuple[CheckReport, ...]
    probes: tuple[ModelProbe, ...] = ()
    problems: tuple[str, ...] = ()

    @property
    def passed(self) -> bool:
        return not self.problems and all(r.passed for r in self.reports) and all(p.ok is not False for p in self.probes)

    @property
    def yarn_reports(self) -> tuple[CheckReport, ...]:
        return tuple(r for r in self.reports if r.expected is not None)

    def all_problems(self) -> list[str]:
        found = list(self.problems)
        for report in self.reports:
            where = f"{report.settings.layer_type}: " if report.settings.layer_type else ""
            found += [where + p for p in report.problems]
        for probe in self.probes:
            if probe.ok is False:
                found.append(f"{probe.name}{' of ' + probe.layer_type if probe.layer_type else ''}: {probe.detail}")
        return found

    def to_dict(self) -> dict:
        return {
            "reports": [r.to_dict() for r in self.reports],
            "probes": [p.to_dict() for p in self.probes],
            "problems": list(self.problems),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "ConfigCheck":
        return cls(
            reports=tuple(CheckReport.from_dict(r) for r in data["reports"]),
            probes=tuple(ModelProbe.from_dict(p) for p in data.get("probes", ())),
            problems=tuple(data.get("problems", ())),
        )


def check_config(config: Mapping[str, Any]) -> ConfigCheck:
    """Check every RoPE block of `config` against the installed transformers, and probe its model classes."""
    nested = () if config.get("rope_scaling") else nested_rope_keys(config)
    if not nested:
        report = check_config_dict(config)
        probes: list[ModelProbe] = []
        if report.expected is not None and is_mla(config) and report.expected.params.mscale_all_dim:
            probes.append(softmax_probe(config, report.expected.params))
        return ConfigCheck((report,), tuple(probes))
    blocks = [t for t in nested if config["rope_parameters"].get(t) is not None]
    reports = tuple(check_config_dict(config, t, require_yarn=False) for t in blocks)
    problems: tuple[str, ...] = ()
    if not any(r.expected is not None for r in reports):
        problems = (f"the config declares YaRN for none of its layer types ({', '.join(nested)})",)
    return ConfigCheck(reports, tuple(rotary_class_probes(config, blocks)), problems)
