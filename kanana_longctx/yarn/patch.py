"""The YaRN patch of a config: one plan, applied either to a dict (in memory) or to the JSON text of a file.

Usage: new_text = patch_text(text, YarnParams()).text; cfg = apply_yarn_to_config_dict(cfg, YarnParams())

What the patch writes (YARN.md, "A patch that every reader applies the same way"):
- identical `rope_scaling` and `rope_parameters` blocks, with both `rope_type` and `type` = "yarn" (vLLM errors
  when they disagree; transformers 4 reads `rope_scaling`, transformers 5 reads either, llama.cpp's converter
  prefers `rope_parameters`), betas as floats (integers warn in transformers 4.56-4.57), no extra keys;
- `rope_theta` inside `rope_parameters` *and* at the top level (a transformers-5-saved file keeps it only inside;
  adding `rope_scaling` alone would then reset theta to 10000 in 5.24);
- `max_position_embeddings` untouched unless asked; a top-level `original_max_position_embeddings`, which overrides
  the block's in transformers 5 and vLLM, is set to agree.
Every other byte of the file stays as it was (jsontext.py).
"""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass, field
from typing import Any, Mapping

from kanana_longctx.errors import ConfigError
from kanana_longctx.yarn.jsontext import JsonDoc, load_object
from kanana_longctx.yarn.params import (
    DEFAULT_ROPE_THETA,
    NO_SCALING_TYPES,
    YARN_TYPE,
    RopeSettings,
    YarnParams,
    finite_number,
)

# Top-level keys the patch may touch, in the order it touches them, with where a missing one is inserted.
ANCHORS: dict[str, tuple[str, ...]] = {
    "rope_theta": ("rope_parameters", "rope_scaling", "max_position_embeddings"),
    "rope_scaling": ("rope_parameters", "rope_theta", "max_position_embeddings"),
    "rope_parameters": ("rope_scaling", "rope_theta"),
    "max_position_embeddings": (),
    "original_max_position_embeddings": ("max_position_embeddings",),
}


def yarn_block(params: YarnParams, rope_theta: float | None = None) -> dict:
    """The YaRN block written to `rope_scaling` (no theta) and to `rope_parameters` (with theta)."""
    block: dict[str, Any] = {
        "rope_type": YARN_TYPE,
        "type": YARN_TYPE,
        "factor": params.factor,
        "original_max_position_embeddings": params.original_max_position_embeddings,
        "beta_fast": params.beta_fast,
        "beta_slow": params.beta_slow,
    }
    if rope_theta is not None:
        block["rope_theta"] = rope_theta
    return block


def _block_type(block: Any) -> str:
    if not isinstance(block, dict) or not block:
        return "default"
    return str(block.get("rope_type", block.get("type", "default")))


def existing_scaling(config: Mapping[str, Any]) -> str | None:
    """The non-YaRN scaling type a config already uses (llama3, linear, dynamic, longrope, ...), or None."""
    for key in ("rope_scaling", "rope_parameters"):
        kind = _block_type(config.get(key))
        if kind not in NO_SCALING_TYPES and kind != YARN_TYPE:
            return kind
    return None


@dataclass(frozen=True)
class Plan:
    """Top-level keys to set (in order) and notes for the user."""

    updates: dict[str, Any]
    notes: tuple[str, ...] = ()
    replaced_scaling: str | None = None


def plan_yarn(
    config: Mapping[str, Any], params: YarnParams, *, max_position_embeddings: int | None = None, force: bool = False
) -> Plan:
    """Decide what to write. Raises ConfigError for a config that must not be patched as asked."""
    settings = RopeSettings.from_config(config)  # also rejects non-object and per-layer rope blocks
    notes: list[str] = []
    replaced = existing_scaling(config)
    if replaced and not force:
        raise ConfigError(
            f"the config already uses '{replaced}' RoPE scaling; pass --force to replace it with YaRN "
            "(--no-yarn puts it back)"
        )
    if replaced:
        notes.append(f"replaced the existing '{replaced}' RoPE scaling (--no-yarn restores it)")
    top = config.get("rope_theta")
    inner = (config.get("rope_parameters") or {}).get("rope_theta")
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
    updates["rope_scaling"] = yarn_block(params)
    updates["rope_parameters"] = yarn_block(params, theta)
    if max_position_embeddings is not None:
        if max_position_embeddings <= 0:
            raise ConfigError(f"--max-position-embeddings must be positive, got {max_position_embeddings}")
        updates["max_position_embeddings"] = max_position_embeddings
    top_original = settings.top_level_original
    if "original_max_position_embeddings" in config and top_original != params.original_max_position_embeddings:
        updates["original_max_position_embeddings"] = params.original_max_position_embeddings
        notes.append(
            f"set the top-level original_max_position_embeddings ({config['original_max_position_embeddings']}) "
            f"to {params.original_max_position_embeddings}: it overrides the block's in transformers 5 and vLLM"
        )
    return Plan(updates=updates, notes=tuple(notes), replaced_scaling=replaced)


def apply_yarn_to_config_dict(
    config: Mapping[str, Any], params: YarnParams, *, max_position_embeddings: int | None = None, force: bool = False
) -> dict:
    """A patched deep copy of `config` (for a runner that applies YaRN in memory; no file is touched)."""
    plan = plan_yarn(config, params, max_position_embeddings=max_position_embeddings, force=force)
    patched = copy.deepcopy(dict(config))
    patched.update(copy.deepcopy(plan.updates))
    return patched


def remove_yarn_from_config_dict(config: Mapping[str, Any]) -> dict:
    """A copy of `config` without YaRN (plain RoPE, same theta), for when no backup record exists."""
    return load_object(strip_yarn_text(json.dumps(dict(config), indent=2)).text)


@dataclass(frozen=True)
class TextPatch:
    """The result of patching a file's text. `replaced` maps each changed key to its previous value text
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


def patch_text(
    text: str,
    params: YarnParams,
    *,
    max_position_embeddings: int | None = None,
    force: bool = False,
    name: str = "config.json",
) -> TextPatch:
    """Patch the JSON text of a config; `changed` is False when it already says exactly this."""
    doc = JsonDoc.parse(text, name)
    for key in ANCHORS:
        doc.find(key)  # raises on a duplicated RoPE key: which copy a reader uses is anybody's guess
    config = load_object(text, name)
    plan = plan_yarn(config, params, max_position_embeddings=max_position_embeddings, force=force)
    replaced: dict[str, str | None] = {}
    new = text
    for key, value in plan.updates.items():
        doc = JsonDoc.parse(new, name)
        before = doc.value_text(key)
        new = doc.set(key, value, ANCHORS.get(key, ()))
        if JsonDoc.parse(new, name).value_text(key) != before:
            replaced[key] = before
    return TextPatch(new, new != text, replaced, plan.notes, plan.replaced_scaling)


def restore_keys_text(text: str, replaced: Mapping[str, str | None], name: str = "config.json") -> str:
    """Put back the previous value text of each recorded key (removing keys that were absent), keeping every
    other edit made to the file since."""
    new = text
    for key, before in replaced.items():
        doc = JsonDoc.parse(new, name)
        new = doc.delete(key) if before is None else doc.set_text(key, before, ANCHORS.get(key, ()))
    return new


def strip_yarn_text(text: str, name: str = "config.json") -> TextPatch:
    """Remove YaRN from a config that has no backup record: drop a YaRN `rope_scaling`, and turn a YaRN
    `rope_parameters` into plain RoPE with the same theta (or drop it when theta is also at the top level)."""
    config = load_object(text, name)
    notes: list[str] = []
    new = text
    replaced: dict[str, str | None] = {}
    theta = config.get("rope_theta", (config.get("rope_parameters") or {}).get("rope_theta", DEFAULT_ROPE_THETA))
    if _block_type(config.get("rope_scaling")) == YARN_TYPE:
        doc = JsonDoc.parse(new, name)
        replaced["rope_scaling"] = doc.value_text("rope_scaling")
        new = doc.delete("rope_scaling")
    if _block_type(config.get("rope_parameters")) == YARN_TYPE:
        doc = JsonDoc.parse(new, name)
        replaced["rope_parameters"] = doc.value_text("rope_parameters")
        if "rope_theta" in config:
            new = doc.delete("rope_parameters")
        else:
            new = doc.set("rope_parameters", {"rope_theta": theta, "rope_type": "default"})
    if replaced:
        notes.append("no backup record: removed the YaRN blocks and kept plain RoPE with the same rope_theta")
    return TextPatch(new, new != text, replaced, tuple(notes))


def is_yarn_config(config: Mapping[str, Any]) -> bool:
    return YARN_TYPE in (_block_type(config.get("rope_scaling")), _block_type(config.get("rope_parameters")))
