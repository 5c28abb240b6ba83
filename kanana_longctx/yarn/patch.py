"""The YaRN patch of a config: one plan, applied either to a dict (in memory) or to the JSON text of a file.

Usage: new_text = patch_text(text, YarnParams()).text; cfg = apply_yarn_to_config_dict(cfg, YarnParams())

What the patch writes to a config with one RoPE block (YARN.md, "A patch that every reader applies the same way"):
- identical `rope_scaling` and `rope_parameters` blocks, with both `rope_type` and `type` = "yarn" (vLLM errors
  when they disagree; transformers 4 reads `rope_scaling`, transformers 5 reads either, llama.cpp's converter
  prefers `rope_parameters`), betas as floats (integers warn in transformers 4.56-4.57), no extra keys unless the
  recipe has them (Kanana-2's MLA recipe: mscale and mscale_all_dim);
- `rope_theta` inside `rope_parameters` *and* at the top level (a transformers-5-saved file keeps it only inside;
  adding `rope_scaling` alone would then reset theta to 10000 in 5.24);
- `max_position_embeddings` untouched unless asked; a top-level `original_max_position_embeddings`, which overrides
  the block's in transformers 5 and vLLM, is set to agree.
To a config with per-layer-type `rope_parameters` (transformers 5's nested form) it writes the YaRN block into the
asked layer types' blocks only (theta and partial_rotary_factor kept), and no `rope_scaling`: transformers 5 would
let a flat `rope_scaling` replace every layer type's block. YaRN already in the config with other numbers is
replaced only when asked (`replace_yarn`, which files.py grants for its own earlier patch, or `force`).
Every other byte of the file stays as it was (jsontext.py).
"""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

from kanana_longctx.errors import ConfigError
from kanana_longctx.yarn.jsontext import JsonDoc, load_object
from kanana_longctx.yarn.params import (
    DEFAULT_ROPE_THETA,
    MAX_CONTEXT,
    NO_SCALING_TYPES,
    YARN_TYPE,
    RopeSettings,
    YarnParams,
    finite_number,
    nested_rope_keys,
    positive_int,
)
from kanana_longctx.yarn.rope_math import rotary_dim

# Top-level keys the patch may touch, in the order it touches them, with where a missing one is inserted.
ANCHORS: dict[str, tuple[str, ...]] = {
    "rope_theta": ("rope_parameters", "rope_scaling", "max_position_embeddings"),
    "rope_scaling": ("rope_parameters", "rope_theta", "max_position_embeddings"),
    "rope_parameters": ("rope_scaling", "rope_theta"),
    "max_position_embeddings": (),
    "original_max_position_embeddings": ("max_position_embeddings",),
}
# Keys of an existing block that are not scaling settings and must survive the patch.
KEPT_BLOCK_KEYS = ("partial_rotary_factor",)


def yarn_block(params: YarnParams, rope_theta: float | None = None, kept: Mapping[str, Any] | None = None) -> dict:
    """The YaRN block written to `rope_scaling` (no theta) and to `rope_parameters` (with theta). `kept` carries
    the existing block's non-scaling keys (partial_rotary_factor)."""
    block: dict[str, Any] = {
        "rope_type": YARN_TYPE,
        "type": YARN_TYPE,
        "factor": params.factor,
        "original_max_position_embeddings": params.original_max_position_embeddings,
        "beta_fast": params.beta_fast,
        "beta_slow": params.beta_slow,
    }
    for key in ("mscale", "mscale_all_dim"):
        if getattr(params, key) is not None:
            block[key] = getattr(params, key)
    for key in KEPT_BLOCK_KEYS:
        if kept and kept.get(key) is not None:
            block[key] = kept[key]
    if rope_theta is not None:
        block["rope_theta"] = rope_theta
    return block


def _block_type(block: Any) -> str:
    if not isinstance(block, dict) or not block:
        return "default"
    return str(block.get("rope_type", block.get("type", "default")))


def _blocks(config: Mapping[str, Any]) -> list[tuple[str, Any]]:
    """(where, block) for every RoPE block: the two flat keys, or each per-layer-type block."""
    nested = nested_rope_keys(config)
    found = [(f"rope_parameters.{t}", config["rope_parameters"][t]) for t in nested]
    flat_keys = ("rope_scaling",) if nested else ("rope_scaling", "rope_parameters")
    return found + [(key, config.get(key)) for key in flat_keys]


def existing_scaling(config: Mapping[str, Any]) -> str | None:
    """The non-YaRN scaling type a config already uses (llama3, linear, dynamic, longrope, ...), or None."""
    for _, block in _blocks(config):
        kind = _block_type(block)
        if kind not in NO_SCALING_TYPES and kind != YARN_TYPE:
            return kind
    return None


def yarn_layer_types(config: Mapping[str, Any]) -> dict[str, YarnParams | None]:
    """Per-layer-type configs: the layer types that already carry YaRN, with its parameters (None: invalid)."""
    found: dict[str, YarnParams | None] = {}
    for layer_type in nested_rope_keys(config):
        settings = RopeSettings.from_config(config, layer_type)
        if settings.is_yarn:
            found[layer_type] = settings.yarn_params()
    return found


@dataclass(frozen=True)
class Plan:
    """Top-level keys to set (in order), per-layer-type blocks to set inside rope_parameters, notes for the user."""

    updates: dict[str, Any]
    notes: tuple[str, ...] = ()
    replaced_scaling: str | None = None
    layer_updates: dict[str, dict] = field(default_factory=dict)


def _refuse_other_scaling(kind: str | None, force: bool, where: str = "") -> None:
    if kind and not force:
        raise ConfigError(
            f"the config{where} already uses '{kind}' RoPE scaling; pass --force to replace it with YaRN "
            "(--no-yarn puts it back)"
        )


def _refuse_other_yarn(current: YarnParams | None, params: YarnParams, replace: bool, where: str = "") -> None:
    if current is not None and current != params and not replace:
        raise ConfigError(
            f"the config{where} already carries YaRN ({current.summary()}); pass --force to replace it with "
            f"{params.summary()}"
        )


def plan_yarn(
    config: Mapping[str, Any],
    params: YarnParams,
    *,
    layer_types: Sequence[str] | None = None,
    max_position_embeddings: int | None = None,
    force: bool = False,
    replace_yarn: bool = True,
) -> Plan:
    """Decide what to write. `layer_types` names the per-layer-type blocks to patch (required exactly for a config
    that has them). Raises ConfigError for a config that must not be patched as asked."""
    nested = nested_rope_keys(config)  # also rejects per-layer blocks that layer_types does not name
    if nested and not layer_types:
        raise ConfigError(f"per-layer-type rope_parameters ({', '.join(nested)}): name the layer types to patch")
    if layer_types and not nested:
        raise ConfigError("layer types given, but the config has one RoPE block for all layers")
    if max_position_embeddings is not None:
        positive_int(max_position_embeddings, "--max-positions", MAX_CONTEXT)
    plan = _plan_layers(config, params, tuple(layer_types), force, replace_yarn) if nested else _plan_flat(
        config, params, force, replace_yarn
    )
    if max_position_embeddings is not None:
        plan.updates["max_position_embeddings"] = max_position_embeddings
    return plan


def _plan_flat(config: Mapping[str, Any], params: YarnParams, force: bool, replace_yarn: bool) -> Plan:
    settings = RopeSettings.from_config(config)  # also rejects non-object blocks
    notes: list[str] = []
    replaced = existing_scaling(config)
    _refuse_other_scaling(replaced, force)
    if replaced:
        notes.append(f"replaced the existing '{replaced}' RoPE scaling (--no-yarn restores it)")
    _refuse_other_yarn(settings.yarn_params() if settings.is_yarn else None, params, replace_yarn or force)
    top = config.get("rope_theta")
    parameters = config.get("rope_parameters") or {}
    inner = parameters.get("rope_theta")
    for value, where in ((top, "rope_theta"), (inner, "rope_parameters.rope_theta")):
        if value is not None:
            finite_number(value, where)
    if top is not None and inner is not None and float(top) != float(inner):
        raise ConfigError(
            f"rope_theta disagrees: {top} at the top level, {inner} inside rope_parameters; make them equal first"
        )
    theta = top if top is not None else inner
    updates: dict[str, Any] = {}
    if theta is None:
        theta = DEFAULT_ROPE_THETA
        notes.append(f"the file has no rope_theta; wrote transformers' default {DEFAULT_ROPE_THETA:g} explicitly")
    if top is None:
        updates["rope_theta"] = theta  # copied out of rope_parameters (transformers-5-saved files)
        if inner is not None:
            notes.append("copied rope_theta out of rope_parameters to the top level, for transformers 4 readers")
    updates["rope_scaling"] = yarn_block(params, kept=config.get("rope_scaling") or None)
    updates["rope_parameters"] = yarn_block(params, theta, kept=parameters)
    top_original = settings.top_level_original
    if "original_max_position_embeddings" in config and top_original != params.original_max_position_embeddings:
        updates["original_max_position_embeddings"] = params.original_max_position_embeddings
        notes.append(
            f"set the top-level original_max_position_embeddings ({config['original_max_position_embeddings']}) "
            f"to {params.original_max_position_embeddings}: it overrides the block's in transformers 5 and vLLM"
        )
    rotary_dim(config)  # a config without a usable head size cannot be given YaRN that anyone could compute
    return Plan(updates=updates, notes=tuple(notes), replaced_scaling=replaced)


def _plan_layers(
    config: Mapping[str, Any], params: YarnParams, targets: tuple[str, ...], force: bool, replace_yarn: bool
) -> Plan:
    if config.get("rope_scaling"):
        raise ConfigError(
            "the config has a rope_scaling block beside per-layer-type rope_parameters, and readers disagree on "
            "which applies (transformers 5 lets rope_scaling replace every layer type's block); remove one first"
        )
    notes: list[str] = []
    replaced: str | None = None
    layer_updates: dict[str, dict] = {}
    for layer_type in targets:
        block = config["rope_parameters"].get(layer_type)
        if block is None:
            raise ConfigError(f"the '{layer_type}' layers have no RoPE (their block is null); nothing to scale")
        settings = RopeSettings.from_config(config, layer_type)
        rotary_dim(config, block)
        where = f" ({layer_type} layers)"
        kind = _block_type(block)
        if kind not in NO_SCALING_TYPES and kind != YARN_TYPE:
            _refuse_other_scaling(kind, force, where)
            replaced = replaced or kind
            notes.append(f"replaced the existing '{kind}' RoPE scaling of {layer_type} (--no-yarn restores it)")
        _refuse_other_yarn(settings.yarn_params() if settings.is_yarn else None, params, replace_yarn or force, where)
        if settings.theta_source == "default":
            notes.append(
                f"{layer_type} has no rope_theta; wrote transformers' default {DEFAULT_ROPE_THETA:g} explicitly"
            )
        new_block = yarn_block(params, settings.rope_theta, kept=block)
        if new_block != block:
            layer_updates[layer_type] = new_block
    for layer_type, current in yarn_layer_types(config).items():
        if layer_type not in targets:
            summary = current.summary() if current else "an invalid block"
            notes.append(f"{layer_type} layers already carry YaRN ({summary}); left as they are")
    return Plan(updates={}, notes=tuple(notes), replaced_scaling=replaced, layer_updates=layer_updates)


def apply_yarn_to_config_dict(
    config: Mapping[str, Any],
    params: YarnParams,
    *,
    layer_types: Sequence[str] | None = None,
    max_position_embeddings: int | None = None,
    force: bool = False,
) -> dict:
    """A patched deep copy of `config` (for a runner that applies YaRN in memory; no file is touched)."""
    plan = plan_yarn(
        config, params, layer_types=layer_types, max_position_embeddings=max_position_embeddings, force=force
    )
    patched = copy.deepcopy(dict(config))
    patched.update(copy.deepcopy(plan.updates))
    for layer_type, block in plan.layer_updates.items():
        patched["rope_parameters"][layer_type] = copy.deepcopy(block)
    return patched


def remove_yarn_from_config_dict(config: Mapping[str, Any]) -> dict:
    """A copy of `config` without YaRN (plain RoPE, same theta), for when no backup record exists."""
    return load_object(strip_yarn_text(json.dumps(dict(config), indent=2)).text)


@dataclass(frozen=True)
class TextPatch:
    """The result of patching a file's text. `replaced` maps each changed top-level key to its previous value text
    (None when the key was absent), which is exactly what a key-level restore needs."""

    text: str
    changed: bool
    replaced: dict[str, str | None] = field(default_factory=dict)
    notes: tuple[str, ...] = ()
    replaced_scaling: str | None = None

    def to_dict(self) -> dict:
        return {
            "text": self.text,
            "changed": self.changed,
            "replaced": dict(self.replaced),
            "notes": list(self.notes),
            "replaced_scaling": self.replaced_scaling,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "TextPatch":
        return cls(
            text=data["text"],
            changed=data["changed"],
            replaced=dict(data.get("replaced", {})),
            notes=tuple(data.get("notes", ())),
            replaced_scaling=data.get("replaced_scaling"),
        )


def _apply_plan_text(text: str, plan: Plan, name: str) -> tuple[str, dict[str, str | None]]:
    replaced: dict[str, str | None] = {}
    new = text
    for key, value in plan.updates.items():
        doc = JsonDoc.parse(new, name)
        before = doc.value_text(key)
        new = doc.set(key, value, ANCHORS.get(key, ()))
        if JsonDoc.parse(new, name).value_text(key) != before:
            replaced[key] = before
    if plan.layer_updates:
        replaced["rope_parameters"] = JsonDoc.parse(new, name).value_text("rope_parameters")
        for layer_type, block in plan.layer_updates.items():
            new = JsonDoc.parse(new, name).set_nested("rope_parameters", layer_type, block)
    return new, replaced


def patch_text(
    text: str,
    params: YarnParams,
    *,
    layer_types: Sequence[str] | None = None,
    max_position_embeddings: int | None = None,
    force: bool = False,
    replace_yarn: bool = True,
    name: str = "config.json",
) -> TextPatch:
    """Patch the JSON text of a config; `changed` is False when it already says exactly this."""
    doc = JsonDoc.parse(text, name)
    for key in ANCHORS:
        doc.find(key)  # raises on a duplicated RoPE key: which copy a reader uses is anybody's guess
    config = load_object(text, name)
    plan = plan_yarn(
        config,
        params,
        layer_types=layer_types,
        max_position_embeddings=max_position_embeddings,
        force=force,
        replace_yarn=replace_yarn,
    )
    new, replaced = _apply_plan_text(text, plan, name)
    return TextPatch(new, new != text, replaced, plan.notes, plan.replaced_scaling)


def restore_keys_text(text: str, replaced: Mapping[str, str | None], name: str = "config.json") -> str:
    """Put back the previous value text of each recorded key (removing keys that were absent), keeping every
    other edit made to the file since."""
    new = text
    for key, before in replaced.items():
        doc = JsonDoc.parse(new, name)
        new = doc.delete(key) if before is None else doc.set_text(key, before, ANCHORS.get(key, ()))
    return new


def _plain_block(block: Mapping[str, Any], theta: float) -> dict:
    plain: dict[str, Any] = {"rope_theta": theta, "rope_type": "default"}
    plain.update({k: block[k] for k in KEPT_BLOCK_KEYS if block.get(k) is not None})
    return plain


def strip_yarn_text(text: str, name: str = "config.json") -> TextPatch:
    """Remove YaRN from a config that has no backup record: drop a YaRN `rope_scaling`, and turn a YaRN
    `rope_parameters` (or a per-layer-type YaRN block) into plain RoPE with the same theta (or drop a flat one when
    theta is also at the top level)."""
    config = load_object(text, name)
    notes: list[str] = []
    new = text
    replaced: dict[str, str | None] = {}
    nested = nested_rope_keys(config)
    if _block_type(config.get("rope_scaling")) == YARN_TYPE:
        doc = JsonDoc.parse(new, name)
        replaced["rope_scaling"] = doc.value_text("rope_scaling")
        new = doc.delete("rope_scaling")
    if nested:
        for layer_type in nested:
            settings = RopeSettings.from_config(config, layer_type)
            if settings.is_yarn:
                doc = JsonDoc.parse(new, name)
                replaced.setdefault("rope_parameters", doc.value_text("rope_parameters"))
                block = config["rope_parameters"][layer_type]
                new = doc.set_nested("rope_parameters", layer_type, _plain_block(block, settings.rope_theta))
    elif _block_type(config.get("rope_parameters")) == YARN_TYPE:
        theta = RopeSettings.from_config({k: v for k, v in config.items() if k != "rope_scaling"}).rope_theta
        doc = JsonDoc.parse(new, name)
        replaced["rope_parameters"] = doc.value_text("rope_parameters")
        if "rope_theta" in config:
            new = doc.delete("rope_parameters")
        else:
            new = doc.set("rope_parameters", _plain_block(config["rope_parameters"], theta))
    if replaced:
        notes.append("no backup record: removed the YaRN blocks and kept plain RoPE with the same rope_theta")
    return TextPatch(new, new != text, replaced, tuple(notes))


def is_yarn_config(config: Mapping[str, Any]) -> bool:
    return any(_block_type(block) == YARN_TYPE for _, block in _blocks(config))
