"""RoPE/YaRN on a loaded transformers config and model: apply in memory, read back, report limits.

Usage: recipe = apply_recipe(config); remove_yarn(config); yarn_in_config(config); context_limits(config, yarn)

`--yarn` on `niah` must behave exactly like `config --yarn` on disk, so the blocks come from the same code
(`kanana_longctx.yarn.recipes`: the recipe the config's family needs, per layer type where the config has
per-layer-type `rope_parameters`, DeepSeek-style mscale for MLA); here we only put them on a live config object
and read back what the model really built.
"""

from __future__ import annotations


def _rope_dict(config) -> dict:
    params = getattr(config, "rope_parameters", None)
    if isinstance(params, dict):
        return dict(params)
    scaling = getattr(config, "rope_scaling", None)
    return dict(scaling) if isinstance(scaling, dict) else {}


def _transformers_major() -> int:
    import transformers

    return int(transformers.__version__.split(".")[0])


def set_config_rope(config, block: dict) -> None:
    """Put one RoPE block (with its rope_theta) on a live config, in the form the installed transformers reads."""
    if hasattr(config, "rope_parameters"):
        config.rope_parameters = dict(block)
    else:  # transformers 4: rope_scaling + top-level rope_theta
        scaling = {k: v for k, v in block.items() if k != "rope_theta"}
        config.rope_scaling = None if scaling.get("rope_type") == "default" else scaling
        config.rope_theta = block.get("rope_theta", getattr(config, "rope_theta", 10000.0))


def apply_recipe(config, name: str = "auto", **numbers):
    """Put the YaRN recipe `name` (auto: the one the config's family needs) on a live config, exactly as `config
    --recipe` writes it; `numbers` (factor, original, beta_fast, beta_slow, layer_types) override the recipe's.
    Returns the YarnRecipe (what was chosen and why). Call before the model is built."""
    from kanana_longctx.yarn.recipes import live_rope_updates, recipe_for

    data = config.to_dict()
    recipe = recipe_for(data, name, **{k: v for k, v in numbers.items() if v is not None})
    for key, value in live_rope_updates(data, recipe, _transformers_major()).items():
        setattr(config, key, value)
    return recipe


def remove_yarn(config) -> None:
    """Plain RoPE (same theta) on every block of a live config that carries YaRN."""
    from kanana_longctx.yarn.recipes import plain_rope_updates

    for key, value in plain_rope_updates(config.to_dict(), _transformers_major()).items():
        setattr(config, key, value)


def yarn_in_config(config) -> dict | None:
    """The YaRN parameters a config carries (with per-layer-type blocks: the first layer type's that has YaRN,
    and which types have it), or None."""
    rope = _rope_dict(config)
    blocks = {None: rope}
    if rope and all(isinstance(v, dict) for v in rope.values()):  # per layer type (transformers 5)
        blocks = rope
    keys = ("factor", "original_max_position_embeddings", "beta_fast", "beta_slow", "mscale", "mscale_all_dim")
    found = {t: b for t, b in blocks.items() if b.get("rope_type", b.get("type")) == "yarn"}
    if not found:
        return None
    first = next(iter(found.values()))
    yarn = {k: first[k] for k in keys if first.get(k) is not None}
    if None not in found:
        yarn["layer_types"] = list(found)
    return yarn


def context_limits(config, yarn: dict | None) -> tuple[int, int]:
    """(native context, addressable context). With YaRN: original x factor; without: max_position_embeddings."""
    max_pos = int(getattr(config, "max_position_embeddings", 0) or 0)
    if yarn:
        native = int(yarn.get("original_max_position_embeddings") or max_pos)
        return native, int(native * float(yarn.get("factor", 1.0)))
    return max_pos, max_pos


def rotary_attention_factor(model) -> float:
    """The attention (mscale) factor the model's rotary embedding really applies: 1.0 means no YaRN in effect."""
    inner = getattr(model, "model", model)
    rotary = getattr(inner, "rotary_emb", None)
    return float(getattr(rotary, "attention_scaling", 1.0)) if rotary is not None else 1.0
