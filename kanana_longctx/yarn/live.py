"""RoPE/YaRN on a loaded transformers config and model: apply in memory, read back, report limits.

Usage: set_config_yarn(config, YarnParams(factor=4.4)); yarn_in_config(config); context_limits(config, yarn)

`--yarn` on `niah` must behave exactly like `config --yarn` on disk, so the block comes from the same code
(`kanana_longctx.yarn`); here we only put it on a live config object and read back what the model really built.
"""

from __future__ import annotations

from kanana_longctx.yarn.params import YarnParams


def _rope_dict(config) -> dict:
    params = getattr(config, "rope_parameters", None)
    if isinstance(params, dict):
        return dict(params)
    scaling = getattr(config, "rope_scaling", None)
    return dict(scaling) if isinstance(scaling, dict) else {}


def _rope_theta(config) -> float:
    theta = _rope_dict(config).get("rope_theta", getattr(config, "rope_theta", None))
    return float(theta) if theta is not None else 10000.0


def set_config_yarn(config, params: YarnParams | None) -> None:
    """Put YaRN (params given) or plain RoPE (None) on a live config, keeping rope_theta."""
    theta = _rope_theta(config)
    if params is None:
        block = {"rope_type": "default", "rope_theta": theta}
    else:
        from kanana_longctx.yarn.patch import yarn_block

        block = {**yarn_block(params), "rope_theta": theta}
        block.pop("type", None)  # the legacy alias; transformers 5 reads rope_type
    if hasattr(config, "rope_parameters"):
        config.rope_parameters = block
    else:  # transformers 4: rope_scaling + top-level rope_theta
        config.rope_scaling = None if params is None else {k: v for k, v in block.items() if k != "rope_theta"}
        config.rope_theta = theta


def yarn_in_config(config) -> dict | None:
    """The YaRN parameters a config carries, or None."""
    rope = _rope_dict(config)
    kind = rope.get("rope_type", rope.get("type"))
    if kind != "yarn":
        return None
    keys = ("factor", "original_max_position_embeddings", "beta_fast", "beta_slow")
    return {k: rope[k] for k in keys if k in rope}


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
