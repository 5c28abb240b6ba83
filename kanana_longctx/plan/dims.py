"""The dimensions of a decoder-only transformer as its config declares them, read in one place (pure).

Usage: dims = ModelDims.from_config(model.config); dims.kv_heads, dims.head_dim, dims.groups

Every consumer (FLOP accounting, memory sizing, the fast forward, the fused layers) reads these instead of the
config, so a config's quirks (no `num_key_value_heads`: as many kv heads as query heads; no `head_dim`: hidden
size over heads) are resolved once. Works on a transformers config object or anything with the same attributes.

Mixture-of-experts configs (Qwen-MoE's num_experts, Mixtral's num_local_experts, DeepSeek's n_routed_experts) add
the routed experts, how many run per token and their width; MLA configs (DeepSeek-style: kv_lora_rank,
qk_rope_head_dim) their latent ranks and head widths. For MLA `kv_heads` x `head_dim` is what transformers' own
cache holds per position and layer for K and V together, over two: every query head gets its own K (nope + rope
dims) and V.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass


@dataclass(frozen=True)
class ModelDims:
    hidden: int  # the residual stream's width (hidden_size)
    layers: int
    heads: int  # query heads
    kv_heads: int
    head_dim: int
    ffn: int  # the MLP's intermediate width (MoE: of the dense layers)
    experts: int = 0  # routed experts per MoE layer (0: a dense model)
    top_k: int = 0  # experts each token runs
    expert_ffn: int = 0  # one expert's intermediate width
    shared_ffn: int = 0  # the always-on (shared) experts' total width per MoE layer
    dense_layers: int = 0  # layers of an MoE model that keep the dense MLP
    kv_lora_rank: int = 0  # MLA (0: not MLA)
    q_lora_rank: int = 0
    qk_head_dim: int = 0  # MLA: nope + rope dims of one query/key head
    qk_rope_head_dim: int = 0
    v_head_dim: int = 0

    @classmethod
    def from_config(cls, config) -> "ModelDims":
        hidden = int(config.hidden_size)
        heads = int(config.num_attention_heads)
        layers = int(config.num_hidden_layers)
        ffn = int(getattr(config, "intermediate_size", None) or 4 * hidden)
        kv_heads = int(getattr(config, "num_key_value_heads", None) or heads)
        head_dim = int(getattr(config, "head_dim", None) or hidden // heads)
        extra = {**_moe(config, ffn, layers), **_mla(config)}
        if extra.get("kv_lora_rank"):
            kv_heads, head_dim = heads, (extra["qk_head_dim"] + extra["v_head_dim"]) // 2
        return cls(hidden=hidden, layers=layers, heads=heads, kv_heads=kv_heads, head_dim=head_dim, ffn=ffn, **extra)

    @property
    def groups(self) -> int:
        """Query heads per kv head (grouped-query attention)."""
        return self.heads // self.kv_heads

    @property
    def attention_width(self) -> int:
        """heads x head_dim: the width of the attention output (o_proj's input)."""
        return self.heads * self.head_dim

    def to_dict(self) -> dict:
        return asdict(self)


def _int(config, *names: str) -> int:
    for name in names:
        value = getattr(config, name, None)
        if isinstance(value, int) and not isinstance(value, bool) and value > 0:
            return value
    return 0


def _moe(config, ffn: int, layers: int) -> dict:
    """The MoE fields of a config (empty for a dense one)."""
    experts = _int(config, "num_experts", "num_local_experts", "n_routed_experts")
    top_k = _int(config, "num_experts_per_tok", "num_experts_per_token")
    if not experts or not top_k:
        return {}
    if hasattr(config, "moe_intermediate_size"):
        expert_ffn = _int(config, "moe_intermediate_size")
    else:  # Mixtral: intermediate_size is one expert's width, every layer is MoE
        expert_ffn, ffn = ffn, 0
    shared = _int(config, "shared_expert_intermediate_size") or _int(config, "n_shared_experts") * expert_ffn
    dense = _int(config, "first_k_dense_replace") + len(getattr(config, "mlp_only_layers", None) or ())
    return {"experts": experts, "top_k": top_k, "expert_ffn": expert_ffn, "shared_ffn": shared,
            "dense_layers": min(dense, layers)}


def _mla(config) -> dict:
    """The MLA fields of a config (empty unless it has a KV latent rank and rope head dims)."""
    rank, rope = _int(config, "kv_lora_rank"), _int(config, "qk_rope_head_dim")
    if not rank or not rope:
        return {}
    nope = _int(config, "qk_nope_head_dim")
    return {"kv_lora_rank": rank, "q_lora_rank": _int(config, "q_lora_rank"), "qk_head_dim": nope + rope,
            "qk_rope_head_dim": rope, "v_head_dim": _int(config, "v_head_dim") or nope}
