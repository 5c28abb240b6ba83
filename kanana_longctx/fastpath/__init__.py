"""The fast Llama-family engine (torch): a forward pass of our own over the model's weights with one reusable KV
buffer.

Usage: fast = PrefixReusingLlama(loaded, max_tokens=L + new, rows=2)  # .llama; fast.prefill(ids, 0)

Modules (imports run down the list):
- kv.py: `KVBuffer`, the owner of every layer's K and V (rows x capacity).
- layers.py: the model parts a forward needs, the module-path QKV and the fused layer halves (on kernels or compiled).
- decode.py: greedy decoding replayed from CUDA graphs over `(parts, kv)`.
- llama.py: `PrefixReusingLlama`: chunked prefill into any row at any position, joined short suffixes, decoding.
"""
