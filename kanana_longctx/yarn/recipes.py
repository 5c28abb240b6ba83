"""The YaRN recipe a config's family needs: Kanana 1.5's, Kanana-2's, or custom numbers.

Usage: recipe = recipe_for(config_dict); updates = live_rope_updates(config_dict, recipe)  # setattr each one

Recipes (the published facts are cited in docs/yarn.md):
- kanana-1.5: factor 4.4 over 32,768 trained tokens, beta_fast 64, beta_slow 2 (Kanana's README).
- kanana-2: factor 4.0 over 32,768, beta_fast 32, beta_slow 1; on an MLA config also mscale = mscale_all_dim = 1.0,
  the DeepSeek-style block of the kakao/kanana-2 README for the 30B-A3B model. DeepSeek attention turns
  mscale_all_dim into a softmax-scale factor; any other attention would read the equal pair as "attention factor
  1.0" and lose YaRN's temperature, so the pair is written only for MLA configs.
- custom: only the numbers given (--yarn-factor is required), betas 32/1 (the YaRN paper's and transformers'
  defaults) unless given.
`auto` picks kanana-2 for an MLA config or one with per-layer-type RoPE (sliding-window + full attention, the
Kanana-2 small models' layout) and kanana-1.5 otherwise, and says why. A recipe's original context gives way to the
config's own native context when the two differ (a non-Kanana model), with a note; --yarn-original overrides both.
Per-layer-type configs get YaRN on their full-attention layer types only unless other types are asked for:
sliding-window layers never see a distance longer than their window.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

from kanana_longctx.errors import BadInput, ConfigError
from kanana_longctx.yarn.params import (
    DEFAULT_ROPE_THETA,
    RopeSettings,
    YarnParams,
    layer_types_of,
    nested_rope_keys,
    positive_int,
)
from kanana_longctx.yarn.patch import yarn_block
from kanana_longctx.yarn.rope_math import is_mla

AUTO = "auto"
KANANA_15 = "kanana-1.5"
KANANA_2 = "kanana-2"
CUSTOM = "custom"
RECIPE_NAMES = (AUTO, KANANA_15, KANANA_2, CUSTOM)
ALL_LAYER_TYPES = "all"

_PRESETS: dict[str, dict[str, float | int]] = {
    KANANA_15: {"factor": 4.4, "original_max_position_embeddings": 32768, "beta_fast": 64.0, "beta_slow": 2.0},
    KANANA_2: {"factor": 4.0, "original_max_position_embeddings": 32768, "beta_fast": 32.0, "beta_slow": 1.0},
}
_KANANA_2_MLA_MSCALE = {"mscale": 1.0, "mscale_all_dim": 1.0}
_CUSTOM_BETAS = {"beta_fast": 32.0, "beta_slow": 1.0}


@dataclass(frozen=True)
class YarnRecipe:
    """A resolved recipe: the parameters, where they go (None: the config's one RoPE block; else the layer types
    whose per-layer-type blocks get YaRN), why this recipe, and notes for the user."""

    name: str
    params: YarnParams
    layer_types: tuple[str, ...] | None
    reason: str
    notes: tuple[str, ...] = ()

    def describe(self) -> str:
        where = "" if self.layer_types is None else f"; layer types: {', '.join(self.layer_types)}"
        return f"recipe {self.name} ({self.reason}): {self.params.summary()}{where}"

    def to_dict(self) -> dict:
        return {
            "name": self.name,
            "params": self.params.to_dict(),
            "layer_types": None if self.layer_types is None else list(self.layer_types),
            "reason": self.reason,
            "notes": list(self.notes),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "YarnRecipe":
        types = data.get("layer_types")
        return cls(
            name=data["name"],
            params=YarnParams.from_dict(data["params"]),
            layer_types=None if types is None else tuple(types),
            reason=data.get("reason", ""),
            notes=tuple(data.get("notes", ())),
        )


def is_sliding(layer_type: str) -> bool:
    return "sliding" in layer_type


def family_of(config: Mapping[str, Any]) -> tuple[str, str]:
    """(recipe name, why) for `auto`: what the config's architecture tells about its family."""
    if is_mla(config):
        return KANANA_2, (
            f"MLA attention: qk_rope_head_dim {config['qk_rope_head_dim']}, kv_lora_rank {config['kv_lora_rank']}"
        )
    types = layer_types_of(config)
    if nested_rope_keys(config) or any(is_sliding(t) for t in types):
        return KANANA_2, f"per-layer attention types: {', '.join(types)}"
    architecture = config.get("architectures")
    named = architecture[0] if isinstance(architecture, list) and architecture else config.get("model_type")
    return KANANA_15, f"{named or 'a config'} with one RoPE for all layers"


def native_context(config: Mapping[str, Any]) -> int | None:
    """The context the model was trained at: a YaRN block's original, a top-level
    original_max_position_embeddings, else max_position_embeddings (None when the config says nothing)."""
    for layer_type in nested_rope_keys(config) or (None,):
        try:
            settings = RopeSettings.from_config(config, layer_type)
        except BadInput:
            continue
        if settings.is_yarn and settings.original_max_position_embeddings:
            return settings.original_max_position_embeddings
    for value in (config.get("original_max_position_embeddings"), config.get("max_position_embeddings")):
        if isinstance(value, int) and not isinstance(value, bool) and value > 0:
            return value
    return None


def target_layer_types(config: Mapping[str, Any], asked: Sequence[str] | None) -> tuple[str, ...] | None:
    """None for a config with one RoPE block; else the per-layer-type blocks to patch (default: the
    full-attention types when sliding-window types exist, all types otherwise)."""
    nested = nested_rope_keys(config)
    if not nested:
        if asked:
            raise BadInput(
                "--layer-types needs per-layer-type rope_parameters; this config has one RoPE block for all layers"
            )
        return None
    if not asked:
        full = tuple(t for t in nested if not is_sliding(t))
        return full or nested
    chosen: list[str] = []
    for item in asked:
        for name in (part.strip() for part in str(item).split(",")):
            if name == ALL_LAYER_TYPES:
                chosen.extend(nested)
            elif name not in nested:
                raise BadInput(f"--layer-types: '{name}' is not one of this config's layer types: {', '.join(nested)}")
            elif name:
                chosen.append(name)
    if not chosen:
        raise BadInput(f"--layer-types: name at least one of: {', '.join(nested)}")
    return tuple(dict.fromkeys(chosen))


def recipe_for(
    config: Mapping[str, Any],
    name: str = AUTO,
    *,
    factor: float | None = None,
    original: int | None = None,
    beta_fast: float | None = None,
    beta_slow: float | None = None,
    layer_types: Sequence[str] | None = None,
) -> YarnRecipe:
    """The recipe for this config: `name` (or the family `auto` finds), with any numbers given overriding it.
    Raises BadInput for an unknown name, a custom recipe without a factor, or numbers out of bounds."""
    if name not in RECIPE_NAMES:
        raise BadInput(f"--recipe must be one of {', '.join(RECIPE_NAMES)}; got '{name}'")
    if not isinstance(config, Mapping):
        raise ConfigError(f"a config must be a JSON object, got {type(config).__name__}")
    family, why = family_of(config)
    chosen = family if name == AUTO else name
    reason = f"chosen from the config: {why}" if name == AUTO else "asked for with --recipe"
    notes: list[str] = []
    values: dict[str, Any] = dict(_PRESETS.get(chosen, _CUSTOM_BETAS))
    mla = is_mla(config)
    if chosen == KANANA_2 and mla:
        values.update(_KANANA_2_MLA_MSCALE)
    elif chosen == KANANA_2:
        notes.append(
            "mscale/mscale_all_dim left out: the pair is DeepSeek-attention-specific; on this architecture it "
            "would set the attention factor to 1.0 and drop YaRN's temperature"
        )
    if chosen == CUSTOM and factor is None:
        raise BadInput("--recipe custom needs --yarn-factor")
    given = {"factor": factor, "beta_fast": beta_fast, "beta_slow": beta_slow}
    values.update({k: v for k, v in given.items() if v is not None})
    native = native_context(config)
    if original is not None:
        values["original_max_position_embeddings"] = positive_int(original, "--yarn-original")
    elif native is not None and native != values.get("original_max_position_embeddings"):
        if chosen != CUSTOM:
            notes.append(
                f"original context {native} from the config itself, not the recipe's "
                f"{values['original_max_position_embeddings']} (pass --yarn-original to choose)"
            )
        values["original_max_position_embeddings"] = native
    elif native is None and chosen == CUSTOM:
        raise BadInput("--recipe custom needs --yarn-original: the config names no context length")
    targets = target_layer_types(config, layer_types)
    if targets is None and any(is_sliding(t) for t in layer_types_of(config)):
        notes.append("one RoPE block serves every layer here, sliding-window layers included")
    return YarnRecipe(chosen, YarnParams(**values), targets, reason, tuple(notes))


# -- in memory (a live transformers config; no file) -----------------------------------------------------------


def _live_block(params: YarnParams, theta: float) -> dict:
    block = yarn_block(params, theta)
    block.pop("type", None)  # the legacy alias; transformers 5 reads rope_type
    return block


def _theta(config: Mapping[str, Any], layer_type: str | None) -> float:
    return RopeSettings.from_config(config, layer_type).rope_theta if config else DEFAULT_ROPE_THETA


def live_rope_updates(config: Mapping[str, Any], recipe: YarnRecipe, transformers_major: int = 5) -> dict[str, Any]:
    """The attributes to set on a live transformers config (from `config.to_dict()`) so that it carries `recipe`,
    exactly as `config --yarn` would write it: transformers 5 `rope_parameters` (per layer type where the config
    has them), transformers 4 `rope_scaling` plus a top-level `rope_theta`. Set them before the model is built:
    DeepSeek-style attention reads mscale_all_dim when its layers are constructed."""
    if recipe.layer_types is None:
        theta = _theta(config, None)
        block = _live_block(recipe.params, theta)
        if transformers_major >= 5:
            return {"rope_parameters": block}
        return {"rope_scaling": {k: v for k, v in block.items() if k != "rope_theta"}, "rope_theta": theta}
    if transformers_major < 5:
        raise ConfigError("per-layer-type rope_parameters need transformers 5")
    nested = copy.deepcopy(dict(config["rope_parameters"]))
    for layer_type in recipe.layer_types:
        block = _live_block(recipe.params, _theta(config, layer_type))
        nested[layer_type] = {**(nested.get(layer_type) or {}), **block}
    return {"rope_parameters": nested}


def plain_rope_updates(config: Mapping[str, Any], transformers_major: int = 5) -> dict[str, Any]:
    """The attributes that put plain RoPE (same theta) back on a live config: every YaRN block becomes default."""
    nested = nested_rope_keys(config)
    if not nested:
        theta = _theta(config, None)
        if transformers_major >= 5:
            return {"rope_parameters": {"rope_type": "default", "rope_theta": theta}}
        return {"rope_scaling": None, "rope_theta": theta}
    blocks = copy.deepcopy(dict(config["rope_parameters"]))
    for layer_type in nested:
        if RopeSettings.from_config(config, layer_type).is_yarn:
            blocks[layer_type] = {"rope_type": "default", "rope_theta": _theta(config, layer_type)}
    return {"rope_parameters": blocks}
