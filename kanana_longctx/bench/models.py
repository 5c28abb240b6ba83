"""Random-weight models of named shapes, built on the device without any download.

Usage: model = random_model("llama-8b", device="cuda", yarn=True); shape_config("kanana-moe-a3b", yarn=False)

Shapes are ModelArgs-style presets (gpt-fast's `from_name`): what the Kanana family and its peers look like, each
on the transformers architecture that has its layout (Llama for the dense models, Qwen3-MoE for Kanana 1.5's
fine-grained MoE, DeepSeek-V3 for Kanana-2's MLA + MoE; Mistral, a Qwen3 layer_types hybrid and Olmo3 with
per-layer-type RoPE, the Kanana-2 small models' layout, for the sliding window; Mixtral for the other MoE layout). The "class" shapes match the published sizes (hidden width, heads, head_dim, experts, top-k, native
context), not every detail of a checkpoint. `tiny-*` shapes keep each architecture's layout at CPU-test sizes.
YaRN, where asked, is the recipe the config's family needs (kanana_longctx.yarn.recipes, as `config` writes it).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from kanana_longctx.errors import BadInput


@dataclass(frozen=True)
class Shape:
    hidden: int
    layers: int
    heads: int
    kv_heads: int
    ffn: int  # the dense MLP's width (MoE: of the dense layers and shared experts' total, where there are any)
    vocab: int
    rope_theta: float = 5e5
    max_position_embeddings: int = 32768
    arch: str = "llama"  # llama | qwen3_moe | mixtral | deepseek_v3 | mistral | qwen3 | olmo3
    head_dim: int = 0  # 0: hidden // heads
    tied: bool = False
    experts: int = 0  # routed experts per MoE layer (0: dense)
    top_k: int = 0
    expert_ffn: int = 0
    shared_experts: int = 0
    dense_layers: int = 0  # MLA + MoE: the first layers keep a dense MLP
    kv_lora_rank: int = 0  # MLA
    q_lora_rank: int = 0
    qk_nope_head_dim: int = 0
    qk_rope_head_dim: int = 0
    v_head_dim: int = 0
    sliding_window: int = 0
    layer_types: tuple[str, ...] = field(default_factory=tuple)


# the widths of examples/kanana-2-30b-a3b-like-config.json
_MLA_30B = dict(
    hidden=2048, heads=32, kv_heads=32, ffn=6144, vocab=128256, rope_theta=1e4, arch="deepseek_v3", experts=128,
    top_k=6, expert_ffn=768, shared_experts=2, dense_layers=1, kv_lora_rank=512, q_lora_rank=768,
    qk_nope_head_dim=128, qk_rope_head_dim=64, v_head_dim=128,
)
_HYBRID = ("sliding_attention", "sliding_attention", "sliding_attention", "full_attention")

SHAPES = {
    # Kanana-1.5-8B / Llama-3-8B class
    "llama-8b": Shape(hidden=4096, layers=32, heads=32, kv_heads=8, ffn=14336, vocab=128256),
    # Kanana-Flag-1.5-32.5B class (Qwen2.5-32B-like widths)
    "llama-32b": Shape(hidden=5120, layers=64, heads=40, kv_heads=8, ffn=27648, vocab=128256),
    # Kanana-1.5-2.1B class: head_dim 128 over a 1792 residual (28 x 128 = 3584 != 1792), tied embeddings
    "kanana-2.1b": Shape(hidden=1792, layers=32, heads=28, kv_heads=4, ffn=8064, vocab=128256, head_dim=128, tied=True),
    # Kanana-1.5-15.7B-A3B class: 64 fine-grained experts, top-8, 32K native (about 15.4B parameters, 2.7B active)
    "kanana-moe-a3b": Shape(hidden=2048, layers=32, heads=16, kv_heads=8, ffn=9216, vocab=128256, arch="qwen3_moe",
                            head_dim=128, experts=64, top_k=8, expert_ffn=1152),
    # Kanana-2-30B-A3B class: MLA + MoE, 48 layers (about 31B parameters, 62 GB in bf16: fits one H200)
    "kanana-2-a3b": Shape(layers=48, **_MLA_30B),
    # the same per-layer shapes at a quarter of the depth: a quicker benchmark on smaller cards
    "kanana-2-a3b-12l": Shape(layers=12, **_MLA_30B),
    # small shapes for CPU tests of the speed paths
    "tiny": Shape(hidden=128, layers=2, heads=4, kv_heads=2, ffn=256, vocab=49152, rope_theta=1e4, max_position_embeddings=4096),
    "tiny-2.1b": Shape(hidden=64, layers=2, heads=4, kv_heads=2, ffn=128, vocab=49152, head_dim=32, tied=True,
                       rope_theta=1e4, max_position_embeddings=4096),
    "tiny-moe": Shape(hidden=64, layers=2, heads=4, kv_heads=2, ffn=128, vocab=49152, arch="qwen3_moe", head_dim=16,
                      experts=8, top_k=2, expert_ffn=32, rope_theta=1e4, max_position_embeddings=4096),
    "tiny-mla": Shape(hidden=64, layers=2, heads=4, kv_heads=4, ffn=128, vocab=49152, arch="deepseek_v3", experts=8,
                      top_k=2, expert_ffn=32, shared_experts=1, dense_layers=1, kv_lora_rank=32, q_lora_rank=0,
                      qk_nope_head_dim=16, qk_rope_head_dim=8, v_head_dim=16, rope_theta=1e4,
                      max_position_embeddings=4096),
    "tiny-sliding": Shape(hidden=64, layers=2, heads=4, kv_heads=2, ffn=128, vocab=49152, arch="mistral",
                          sliding_window=128, rope_theta=1e4, max_position_embeddings=4096),
    "tiny-hybrid": Shape(hidden=64, layers=4, heads=4, kv_heads=2, ffn=128, vocab=49152, arch="qwen3", head_dim=16,
                         sliding_window=128, layer_types=_HYBRID, rope_theta=1e4, max_position_embeddings=4096),
    # the Kanana-2 small models' layout (examples/kanana-2-1.3b-like-config.json): Olmo3 with per-layer-type RoPE
    "tiny-olmo3": Shape(hidden=64, layers=4, heads=4, kv_heads=2, ffn=128, vocab=49152, arch="olmo3",
                        sliding_window=128, layer_types=_HYBRID, rope_theta=1e4, max_position_embeddings=4096),
    "tiny-mixtral": Shape(hidden=64, layers=2, heads=4, kv_heads=2, ffn=32, vocab=49152, arch="mixtral", experts=8,
                          top_k=2, rope_theta=1e4, max_position_embeddings=4096),
}


def _common(s: Shape) -> dict:
    return dict(
        hidden_size=s.hidden, num_hidden_layers=s.layers, num_attention_heads=s.heads, num_key_value_heads=s.kv_heads,
        intermediate_size=s.ffn, vocab_size=s.vocab, max_position_embeddings=s.max_position_embeddings,
        tie_word_embeddings=s.tied,
    )


def _arch_config(s: Shape):
    """The transformers config of the shape's architecture (import inside: configs only, no weights)."""
    import transformers

    kw = _common(s)
    if s.arch != "deepseek_v3":  # explicit: Mixtral's config keeps head_dim None, which its YaRN cannot read
        kw["head_dim"] = s.head_dim or s.hidden // s.heads
    if s.arch == "llama":
        return transformers.LlamaConfig(**kw)
    if s.arch == "mistral":
        return transformers.MistralConfig(sliding_window=s.sliding_window or None, **kw)
    if s.arch == "qwen3":
        return transformers.Qwen3Config(use_sliding_window=bool(s.sliding_window), sliding_window=s.sliding_window,
                                        layer_types=list(s.layer_types) or None, max_window_layers=0, **kw)
    if s.arch == "qwen3_moe":
        return transformers.Qwen3MoeConfig(num_experts=s.experts, num_experts_per_tok=s.top_k,
                                           moe_intermediate_size=s.expert_ffn, norm_topk_prob=True, **kw)
    if s.arch == "mixtral":  # intermediate_size is one expert's width
        return transformers.MixtralConfig(num_local_experts=s.experts, num_experts_per_tok=s.top_k, **kw)
    if s.arch == "olmo3":
        return transformers.Olmo3Config(sliding_window=s.sliding_window, layer_types=list(s.layer_types), **kw)
    if s.arch == "deepseek_v3":
        return transformers.DeepseekV3Config(
            n_routed_experts=s.experts, num_experts_per_tok=s.top_k, moe_intermediate_size=s.expert_ffn,
            n_shared_experts=s.shared_experts, first_k_dense_replace=s.dense_layers, n_group=1, topk_group=1,
            kv_lora_rank=s.kv_lora_rank, q_lora_rank=s.q_lora_rank or None, qk_nope_head_dim=s.qk_nope_head_dim,
            qk_rope_head_dim=s.qk_rope_head_dim, v_head_dim=s.v_head_dim, **kw,
        )
    raise BadInput(f"shape architecture '{s.arch}' is not one this benchmark builds")


def shape_config(name: str, *, yarn: bool):
    """The shape's config with plain RoPE at its theta, or (yarn) with its family's recipe applied in memory."""
    from kanana_longctx.yarn.live import apply_recipe, set_config_rope

    if name not in SHAPES:
        raise BadInput(f"unknown model shape '{name}' (choose from {', '.join(SHAPES)})")
    s = SHAPES[name]
    config = _arch_config(s)
    plain = {"rope_type": "default", "rope_theta": s.rope_theta}
    if s.arch == "olmo3":  # per-layer-type blocks (transformers 5's nested form)
        config.rope_parameters = {t: dict(plain) for t in dict.fromkeys(s.layer_types)}
    else:
        set_config_rope(config, plain)
    if yarn:
        apply_recipe(config)
    return config


def random_model(name: str, *, device: str = "cuda", dtype: str = "bfloat16", yarn: bool = True, seed: int = 0):
    """Build the model directly on `device` in `dtype` with small random weights (std 0.02, like HF's init)."""
    import torch
    from transformers import AutoModelForCausalLM

    config = shape_config(name, yarn=yarn)
    config._attn_implementation = "sdpa"
    torch_dtype = getattr(torch, dtype)
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch_dtype)
    try:
        with torch.device(device):
            torch.manual_seed(seed)
            model = AutoModelForCausalLM.from_config(config, attn_implementation="sdpa")
    finally:
        torch.set_default_dtype(previous)
    return model.eval()
