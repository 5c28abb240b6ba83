"""A transformers model's own KV cache as a prefix store: extend it by a span of tokens, cut it back to a prefix,
decode greedily from it (torch and transformers inside functions).

Usage: cache = PrefixCache(model, chunk_tokens=2048); cache.extend(ids, start=0)
       cache.crop(n); logits = cache.extend(suffix, start=n, want_logits=True); out = cache.greedy(logits, ...)
       group = DecodeGroup(model, lengths=[n1, n2]); group.add(cache, logits)  # after each prompt, in order
       outs = group.greedy(max_new_tokens=16, stop=stop)                          # all rows at once

Why the model's forward and not our own: it runs every architecture transformers has (MoE routing, MLA, sliding
windows, per-layer-type RoPE) exactly as `generate` does, so reuse is exact wherever the cache is. The cache is a
`DynamicCache` built without the config, so every layer keeps every position: a sliding-window layer's window is
applied by the attention mask transformers builds from the config, not by dropping keys. That keeps any cached
prefix reusable, whatever its length against the window (a `DynamicSlidingWindowLayer` forgets what falls out of
its window and could not be cut back to an earlier prefix), at the KV memory of full attention on those layers.
"""

from __future__ import annotations

import functools
import inspect
from typing import Callable

# Cache layer classes that keep every position and can be cut back to any prefix by slicing.
_FULL_LAYERS = ("DynamicLayer",)
# Layers our full cache stands in for: sliding-window ones (the mask applies the window).
_SLIDING_LAYERS = ("DynamicSlidingWindowLayer",)


def cache_kwarg(model) -> str:
    """The forward's name for the cache: `cache` in transformers >= 5.2x, `past_key_values` before."""
    params = inspect.signature(model.forward).parameters
    return "cache" if "cache" in params else "past_key_values"


def supports_reuse(model) -> tuple[bool, str]:
    """Whether the model's own cache can hold a reusable prefix: a decoder-only model whose default cache has
    only full or sliding-window attention layers (not linear attention, state-space or encoder-decoder caches)."""
    from transformers.cache_utils import DynamicCache

    config = model.config
    if getattr(config, "is_encoder_decoder", False):
        return False, "encoder-decoder models have no single prefix cache"
    params = inspect.signature(model.forward).parameters
    if "cache" not in params and "past_key_values" not in params:
        return False, f"{type(model).__name__}.forward takes no cache"
    try:
        layers = DynamicCache(config=config).layers
    except Exception as exc:  # noqa: BLE001 - any failure means the cache layout is not one we know
        return False, f"cannot build this model's cache ({type(exc).__name__})"
    other = sorted({type(layer).__name__ for layer in layers} - set(_FULL_LAYERS) - set(_SLIDING_LAYERS))
    if other:
        return False, f"cache layers {', '.join(other)} cannot be cut back to a prefix"
    return True, ""


def sliding_note(model) -> str:
    """What the reuse loop does with this model's sliding-window layers ('' without any)."""
    from transformers.cache_utils import DynamicCache

    try:
        layers = DynamicCache(config=model.config).layers
    except Exception:  # noqa: BLE001
        return ""
    sliding = [layer for layer in layers if type(layer).__name__ in _SLIDING_LAYERS]
    if not sliding:
        return ""
    window = getattr(model.config, "sliding_window", None)
    return (
        f"{len(sliding)} of {len(layers)} layers use a {window}-token sliding window: their cache keeps every "
        "position (the window is applied by the mask), so prefixes longer than the window are reused exactly, "
        "at full-attention KV memory on those layers"
    )


class PrefixCache:
    """One sequence's KV in the model's own cache, positions [0, length); `chunk_tokens` bounds one forward."""

    def __init__(self, model, *, chunk_tokens: int = 2048):
        from transformers.cache_utils import DynamicCache

        self.model = model
        self.device = next(model.parameters()).device
        self.chunk_tokens = max(1, int(chunk_tokens))
        self.cache = DynamicCache()  # no config: every layer a full DynamicLayer
        self._kwarg = cache_kwarg(model)

    @property
    def length(self) -> int:
        return int(self.cache.get_seq_length())

    def kv_bytes_per_token(self) -> float:
        """Bytes of K and V one cached position takes over all layers (measured on the cache; 0 when empty)."""
        total = sum(layer.keys.nbytes + layer.values.nbytes for layer in self.cache.layers
                    if getattr(layer, "keys", None) is not None)
        return total / self.length if self.length else 0.0

    def crop(self, tokens: int) -> None:
        """Keep positions [0, tokens) of every layer (slicing: the same in every transformers 5 version)."""
        if tokens > self.length:
            raise ValueError(f"cannot crop a cache of {self.length} positions to {tokens}")
        for layer in self.cache.layers:
            keys = getattr(layer, "keys", None)
            if keys is not None and keys.numel():
                layer.keys = keys[..., :tokens, :]
                layer.values = layer.values[..., :tokens, :]
        if self.length != tokens:  # a cache layout this code does not know: fail rather than reuse the wrong KV
            raise RuntimeError(f"the cache holds {self.length} positions after cutting it to {tokens}")

    def _forward(self, ids, start: int):
        import torch

        ids = torch.as_tensor(ids, dtype=torch.long, device=self.device)[None]
        positions = torch.arange(start, start + ids.shape[1], device=self.device)[None]
        out = self.model(input_ids=ids, position_ids=positions, use_cache=True, logits_to_keep=1, **{self._kwarg: self.cache})
        return out.logits[0, -1]

    def extend(self, ids, start: int, *, want_logits: bool = False):
        """Compute `ids` at positions [start, start + len(ids)) after cutting the cache back to `start`, in chunks;
        the last position's logits (float32) when asked."""
        if start > self.length:
            raise ValueError(f"position {start} is past the {self.length} cached positions")
        self.crop(start)
        logits = None
        for begin in range(0, len(ids), self.chunk_tokens):
            logits = self._forward(ids[begin : begin + self.chunk_tokens], start + begin)
        return logits.float() if want_logits and logits is not None else None

    def greedy(self, first_logits, *, max_new_tokens: int, stop: Callable[[list[int]], bool]) -> list[int]:
        """Greedy tokens from `first_logits` (the prompt's last position), each fed back at the next position,
        until `stop(out)` or the budget; the cache grows past the prompt (a later crop removes it)."""
        out: list[int] = []
        logits = first_logits
        while True:
            out.append(int(logits.argmax()))
            if len(out) >= max_new_tokens or stop(out):
                return out
            logits = self._forward([out[-1]], self.length)


@functools.cache
def _in_place_layer():
    """The class of a decoding group's cache layer (built on first use: transformers is imported inside functions)."""
    from transformers.cache_utils import DynamicLayer

    class InPlaceLayer(DynamicLayer):
        """A full cache layer whose positions live in one buffer allocated up front for the prompt and every token
        to come: a step writes its key and value in place, where DynamicLayer concatenates, a copy of the whole
        layer per step (13% of a 6-row MoE step on an H200, bench/reuse_decode.py). Past the buffer it grows as
        DynamicLayer does. Cut-backs and lengths work on the view as they do on DynamicLayer's tensors."""

        def adopt(self, keys, values, length: int) -> "InPlaceLayer":
            self._buffers = (keys, values)
            self.keys, self.values = keys[..., :length, :], values[..., :length, :]
            self.dtype, self.device, self.is_initialized = keys.dtype, keys.device, True
            return self

        def update(self, key_states, value_states, *args, **kwargs):
            begin, count = self.keys.shape[-2], key_states.shape[-2]
            keys, values = self._buffers
            if begin + count > keys.shape[-2]:
                return super().update(key_states, value_states, *args, **kwargs)
            keys[..., begin : begin + count, :] = key_states
            values[..., begin : begin + count, :] = value_states
            self.keys, self.values = keys[..., : begin + count, :], values[..., : begin + count, :]
            return self.keys, self.values

    return InPlaceLayer


class DecodeGroup:
    """Probes decoded together from their computed prompts: each prompt's K and V copied out of the one-sequence
    PrefixCache (right after its suffix was computed, before the next probe cuts the cache back) into one row of a
    batched cache, right-aligned (padding on the left, masked), then greedy steps for all rows at once.

    Why: a decoding step of a small-batch MoE or MLA forward costs about the same for one row as for several
    (launches, routing, weight reads), so rows decoded together divide that cost; prefilling stays one sequence
    at a time, in the prefix plan's order. The mask hides the padding and the position ids are each row's own, so
    every row computes what its own sequence would (float32 outputs equal the plain loop's: tests). The cache
    holds room for `max_new_tokens` more positions per row, written in place (`_in_place_layer`)."""

    def __init__(self, model, lengths: list[int], *, max_new_tokens: int = 0):
        from transformers.cache_utils import DynamicCache

        if not lengths or min(lengths) < 1:
            raise ValueError("a decoding group needs at least one prompt of at least one token")
        self.model = model
        self.lengths = list(lengths)
        self.width = max(self.lengths)
        self.room = self.width + max(0, int(max_new_tokens))
        self.cache = DynamicCache()
        self.first: list = []
        self.steps = 0  # batched forwards `greedy` ran
        self._kwarg = cache_kwarg(model)

    @property
    def full(self) -> bool:
        return len(self.first) == len(self.lengths)

    def add(self, prefix: PrefixCache, first_logits) -> None:
        """Copy the prompt `prefix` holds (all its positions: the next row's length) and its last logits."""
        import torch

        row = len(self.first)
        if self.full:
            raise ValueError("the decoding group is full")
        n = self.lengths[row]
        if prefix.length != n:
            raise ValueError(f"row {row} expects a {n}-token prompt, the cache holds {prefix.length}")
        for index, layer in enumerate(prefix.cache.layers):
            if row == 0:  # zeros, not empty: masked scores are dropped, but 0 x NaN in the values would not be
                rows, (_, heads, _, k_dim), v_dim = len(self.lengths), layer.keys.shape, layer.values.shape[-1]
                zeros = dict(dtype=layer.keys.dtype, device=layer.keys.device)
                self.cache.layers.append(_in_place_layer()().adopt(torch.zeros(rows, heads, self.room, k_dim, **zeros),
                                         torch.zeros(rows, heads, self.room, v_dim, **zeros), self.width))
            target = self.cache.layers[index]
            target.keys[row, :, self.width - n :, :] = layer.keys[0, :, :n, :]
            target.values[row, :, self.width - n :, :] = layer.values[0, :, :n, :]
        self.first.append(first_logits)

    def greedy(self, *, max_new_tokens: int, stop: Callable[[list[int]], bool]) -> list[list[int]]:
        """Each row's greedy tokens until its `stop(out)` or the budget; a finished row keeps stepping (its
        tokens ignored) until every row has finished."""
        import torch

        if not self.full:
            raise ValueError(f"the decoding group has {len(self.first)} of {len(self.lengths)} prompts")
        device = self.cache.layers[0].keys.device
        outs = [[int(logits.argmax())] for logits in self.first]
        done = [len(o) >= max_new_tokens or stop(o) for o in outs]
        lengths = torch.tensor(self.lengths, device=device)
        mask = (torch.arange(self.width, device=device)[None] >= (self.width - lengths)[:, None]).long()
        self.steps = 0
        while not all(done):
            ids = torch.tensor([o[-1] for o in outs], dtype=torch.long, device=device)[:, None]
            mask = torch.cat([mask, mask.new_ones(len(outs), 1)], dim=1)
            out = self.model(input_ids=ids, position_ids=(lengths + self.steps)[:, None], attention_mask=mask,
                             use_cache=True, logits_to_keep=1, **{self._kwarg: self.cache})
            self.steps += 1
            for i, token in enumerate(out.logits[:, -1].argmax(-1).tolist()):
                if not done[i]:
                    outs[i].append(token)
                    done[i] = len(outs[i]) >= max_new_tokens or stop(outs[i])
        return outs
