"""GPU kernels and the one place that chooses them (torch).

Usage: attention = pick_attention("auto", "cuda", "bfloat16")  # .choice; out = attend(q, k, v, ...)  # .attention

Modules:
- choice.py: every kernel decision (device, dtype, attention kernel, SDPA backends, per-call cuDNN or FA2 with a
  plan cache the run owns, the tile size, the decode step's split count, what the layer halves run on), importing
  torch only when called.
- attention.py: attention of a suffix over a cached prefix, split into rectangle and square, exact or in tiles.
- merge.py: the fused (Triton) merge of two partial attention results.
- split_kv.py: the decode step's split-KV attention, masked or over live keys only.
- decode_triton.py: the decode step's split-KV attention over live keys in two Triton kernels of our own.
- pointwise.py, rope.py: RMSNorm, SiLU(gate) * up and in-place RoPE for the fast engine's layer halves (Triton).
"""
