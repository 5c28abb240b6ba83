"""The backends that turn probes into generations, behind one seam (`base.Backend`).

Usage: backend = open_backend(BackendRequest(options, source, tokenizer))  # .registry

Modules:
- base.py: the protocol and its records (pure): what a backend is asked, what it produces, how it describes itself.
- registry.py: `--engine` names to backend modules, and the choice under `auto` (pure).
- local.py: an in-process transformers model: config first, then weights; stop ids (torch inside functions).
- fast.py: the prefix-reusing loop on the fast engine (kanana_longctx.fastpath).
- reuse.py: prefix reuse on the model's own transformers cache (hfcache.py), for MoE, MLA, sliding-window and
  per-layer-type models.
- hf.py: the plain transformers `generate` loop.
- gpu.py: what an in-process GPU run measures: free memory, peak, the matmul rate.
"""
