"""Attention for a suffix over a cached prefix inside transformers' own forward: bottom-right causal without a
dense mask, so SDPA can take its flash kernel (torch inside functions).

Usage: with prefix_attention(model) as name: cache.extend(...)   # name: the attention it runs, "" if unchanged
       with prefix_attention(model), model_attention(model): group.greedy(...)   # one-token decoding steps

Why: for queries shorter than the keys transformers hands SDPA a dense boolean mask, which no flash kernel
accepts (the memory-efficient kernel runs it, at about half FA2's rate on Hopper: docs/performance.md). A
single unpadded sequence needs no mask beyond "causal, aligned to the last key", which torch's `causal_lower_right`
says without materialising it. Everything else (prefill from position 0, one-token steps, a sliding-window
layer whose keys reach past its window, any other mask) goes to transformers' SDPA unchanged. A decoding group's
one-token steps (`model_attention`) have an attention of their own, `_decode_sdpa`, which reads grouped K/V heads
in place. Both are registered under their own names in transformers' attention and mask registries, and set on
the model only for the reuse run.
"""

from __future__ import annotations

import contextlib

NAME = "kanana_prefix_sdpa"
DECODE_NAME = "kanana_decode_sdpa"


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


def _decode_sdpa(module, query, key, value, attention_mask, dropout=0.0, scaling=None, is_causal=None, **kwargs):
    """One query position per row over grouped K/V heads: the query heads sharing a K/V head become that head's
    query rows, so SDPA reads each K/V head once, mask or not. transformers' SDPA path repeats every K/V head
    for each of its query heads when a mask is passed (its `enable_gqa` is for mask-free calls only), and a
    padded decoding group always passes one: that copy was 59% of a 6-row MoE step on an H200
    (bench/reuse_decode.py). Exact: without a causal mask a query row's result does not depend on its neighbours."""
    import torch
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    rows, heads, q_len, dim = query.shape
    kv_heads = key.shape[1]
    plain = q_len != 1 or heads == kv_heads or heads % kv_heads or dropout or kwargs.get("s_aux") is not None
    if plain or (attention_mask is not None and (attention_mask.dim() != 4 or attention_mask.shape[1] != 1)):
        return sdpa_attention_forward(
            module, query, key, value, attention_mask, dropout=dropout, scaling=scaling, is_causal=is_causal, **kwargs
        )
    packed = query.reshape(rows, kv_heads, heads // kv_heads, dim)  # query head h reads K/V head h // groups
    mask = attention_mask[:, :, -1:, : key.shape[2]] if attention_mask is not None else None
    out = torch.nn.functional.scaled_dot_product_attention(packed, key, value, attn_mask=mask, scale=scaling)
    return out.reshape(rows, 1, heads, value.shape[-1]), None


def register() -> bool:
    """Register both attentions and their mask (the same as SDPA's) with transformers; False where this version
    has no registry for either."""
    try:
        from transformers import AttentionInterface
        from transformers.masking_utils import AttentionMaskInterface, sdpa_mask
    except ImportError:
        return False
    for name, function in ((NAME, _prefix_sdpa), (DECODE_NAME, _decode_sdpa)):
        AttentionInterface.register(name, function)
        AttentionMaskInterface.register(name, sdpa_mask)
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
    """Inside `prefix_attention`, the attention for one-token decoding steps (`_decode_sdpa`, which reads grouped
    K/V heads in place); outside it (a model not on SDPA) the model's own."""
    config = model.config
    if getattr(config, "_attn_implementation", None) != NAME:
        yield
        return
    config._attn_implementation = DECODE_NAME
    try:
        yield
    finally:
        config._attn_implementation = NAME
