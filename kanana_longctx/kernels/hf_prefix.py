"""Attention for a suffix over a cached prefix inside transformers' own forward: bottom-right causal without a
dense mask, so SDPA can take its flash kernel (torch inside functions).

Usage: with prefix_attention(model) as name: cache.extend(...)   # name: the attention it runs, "" if unchanged

Why: for queries shorter than the keys transformers hands SDPA a dense boolean mask, which no flash kernel
accepts (the memory-efficient kernel runs it, at about half FA2's rate on Hopper: docs/performance.md). A
single unpadded sequence needs no mask beyond "causal, aligned to the last key", which torch's `causal_lower_right`
says without materialising it. Everything else (prefill from position 0, one-token decode steps, a sliding-window
layer whose keys reach past its window, any other mask) goes to transformers' SDPA unchanged. Registered under
its own name in transformers' attention and mask registries, and set on the model only for the reuse run.
"""

from __future__ import annotations

import contextlib

NAME = "kanana_prefix_sdpa"


def _prefix_sdpa(module, query, key, value, attention_mask, dropout=0.0, scaling=None, is_causal=None, **kwargs):
    import torch
    from torch.nn.attention.bias import causal_lower_right
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    q_len, kv_len = query.shape[2], key.shape[2]
    window = kwargs.get("sliding_window") or getattr(module, "sliding_window", None)
    if query.shape[0] != 1 or not 1 < q_len < kv_len or (window and kv_len > window) or dropout:
        return sdpa_attention_forward(
            module, query, key, value, attention_mask, dropout=dropout, scaling=scaling, is_causal=is_causal, **kwargs
        )
    groups = query.shape[1] // key.shape[1]
    if groups > 1:  # the lower-right path takes no enable_gqa
        key, value = key.repeat_interleave(groups, dim=1), value.repeat_interleave(groups, dim=1)
    out = torch.nn.functional.scaled_dot_product_attention(
        query, key, value, attn_mask=causal_lower_right(q_len, kv_len), scale=scaling
    )
    return out.transpose(1, 2).contiguous(), None


def register() -> bool:
    """Register the attention and its mask (the same as SDPA's) with transformers; False where this version has no
    registry for either."""
    try:
        from transformers import AttentionInterface
        from transformers.masking_utils import AttentionMaskInterface, sdpa_mask
    except ImportError:
        return False
    AttentionInterface.register(NAME, _prefix_sdpa)
    AttentionMaskInterface.register(NAME, sdpa_mask)
    return True


@contextlib.contextmanager
def prefix_attention(model, enabled: bool = True):
    """Run `model` with the bottom-right causal attention while inside (a model on SDPA only); yields the name of
    the attention now in force, or "" where the model keeps its own."""
    config = model.config
    before = getattr(config, "_attn_implementation", None)
    if not enabled or before != "sdpa" or not register():
        yield ""
        return
    config._attn_implementation = NAME
    try:
        yield "SDPA with bottom-right causal attention for suffixes over the cached prefix"
    finally:
        config._attn_implementation = before


@contextlib.contextmanager
def model_attention(model):
    """Inside `prefix_attention`, the model's own attention again (for decoding steps): one-token steps gain
    nothing from the bottom-right call, and under a registered name transformers' SDPA path took 2.5x longer per
    batched MoE step on an H200 (253.5 against 101.8 ms for 6 rows of 19-32K, bench/reuse_decode.py), most of it
    copies of the grouped K/V heads."""
    config = model.config
    if getattr(config, "_attn_implementation", None) != NAME:
        yield
        return
    config._attn_implementation = "sdpa"
    try:
        yield
    finally:
        config._attn_implementation = NAME
