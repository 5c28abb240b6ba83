"""Random-weight models of named shapes, built on the device without any download.

Usage: model = random_model("llama-8b", device="cuda", yarn=True)

Shapes are ModelArgs-style presets (gpt-fast's `from_name`): what the Kanana family and its peers look like.
"""

from __future__ import annotations

from dataclasses import dataclass

from kanana_longctx.errors import BadInput
from kanana_longctx.yarn.params import YarnParams


@dataclass(frozen=True)
class Shape:
    hidden: int
    layers: int
    heads: int
    kv_heads: int
    ffn: int
    vocab: int
    rope_theta: float = 5e5
    max_position_embeddings: int = 32768


SHAPES = {
    # Kanana-1.5-8B / Llama-3-8B class
    "llama-8b": Shape(hidden=4096, layers=32, heads=32, kv_heads=8, ffn=14336, vocab=128256),
    # Kanana-Flag-1.5-32.5B class (Qwen2.5-32B-like widths)
    "llama-32b": Shape(hidden=5120, layers=64, heads=40, kv_heads=8, ffn=27648, vocab=128256),
    # small shapes for CPU tests of the speed paths
    "tiny": Shape(hidden=128, layers=2, heads=4, kv_heads=2, ffn=256, vocab=49152, rope_theta=1e4, max_position_embeddings=4096),
}


def shape_config(name: str, *, yarn: bool):
    from transformers import LlamaConfig

    if name not in SHAPES:
        raise BadInput(f"unknown model shape '{name}' (choose from {', '.join(SHAPES)})")
    s = SHAPES[name]
    config = LlamaConfig(
        hidden_size=s.hidden,
        num_hidden_layers=s.layers,
        num_attention_heads=s.heads,
        num_key_value_heads=s.kv_heads,
        intermediate_size=s.ffn,
        vocab_size=s.vocab,
        max_position_embeddings=s.max_position_embeddings,
        rope_theta=s.rope_theta,
        tie_word_embeddings=False,
    )
    rope = {"rope_type": "default", "rope_theta": s.rope_theta}
    if yarn:  # Kanana's published YaRN over this shape's trained context
        params = YarnParams(original_max_position_embeddings=s.max_position_embeddings)
        rope = {"rope_type": "yarn", "factor": params.factor, "original_max_position_embeddings": s.max_position_embeddings,
                "beta_fast": params.beta_fast, "beta_slow": params.beta_slow, "rope_theta": s.rope_theta}
    config.rope_parameters = rope
    return config


def random_model(name: str, *, device: str = "cuda", dtype: str = "bfloat16", yarn: bool = True, seed: int = 0):
    """Build the model directly on `device` in `dtype` with small random weights (std 0.02, like HF's init)."""
    import torch
    from transformers import LlamaForCausalLM

    config = shape_config(name, yarn=yarn)
    config._attn_implementation = "sdpa"
    torch_dtype = getattr(torch, dtype)
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch_dtype)
    try:
        with torch.device(device):
            torch.manual_seed(seed)
            model = LlamaForCausalLM(config)
    finally:
        torch.set_default_dtype(previous)
    return model.eval()
