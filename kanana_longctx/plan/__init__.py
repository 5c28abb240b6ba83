"""Planning a run before anything runs (pure: no torch, milliseconds on a CPU).

Usage: dims = ModelDims.from_config(config); batches = plan_reuse(ids, shared, rows)  # .dims, .reuse

Modules:
- dims.py: the model dimensions a config declares, read in one place.
- reuse.py: which KV each probe takes from what the buffer rows already hold, and what is computed once.
- memory.py: KV rows, prefill chunk, buffer length and the plain loop's batch size against one memory budget.
- flops.py: what a probe costs without reuse and what a plan computes (the runner and the dry run alike).
"""
