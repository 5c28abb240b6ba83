"""The reuse backend: prefix reuse on the model's own transformers cache, for every architecture transformers runs
(MoE, MLA, sliding-window and per-layer-type attention) that the fast engine does not cover.

Usage: backend = ReuseBackend(LocalModel(request)); backend.load(); stats = backend.run(job, sink)

The plan is plan.reuse's with one KV row, the one the dry run counts on a CPU (`summarize(..., rows=1)`): the
shared haystack stream is computed once up to the deepest needle, probes run deepest needle first, and each cuts
the cache back to the longest prefix it shares with what the cache holds (the stream, or the previous probe) and
computes only the rest, then decodes greedily. One sequence at a time: no padding, so outputs are the plain
loop's (backends.hf) token for token, in float32. A suffix attends to the cached prefix through a bottom-right
causal SDPA call (kernels.hf_prefix) instead of transformers' dense mask, so a GPU runs it on a flash kernel.
"""

from __future__ import annotations

import time

import numpy as np

from kanana_longctx.backends import gpu
from kanana_longctx.backends.base import GenerationSink, LoopStats, RunJob
from kanana_longctx.backends.local import LoadedModel, LocalBackend, make_stop
from kanana_longctx.kernels.choice import sdpa_context
from kanana_longctx.kernels.hf_prefix import prefix_attention
from kanana_longctx.options import RunOptions
from kanana_longctx.plan.flops import ModelShape, planned_flops
from kanana_longctx.plan.memory import CHUNK_CHOICES
from kanana_longctx.plan.reuse import SHARED, Copy, plan_reuse

CPU_CHUNK_TOKENS = 2048  # no kernels to feed on a CPU; short forwards keep its memory low


def chunk_tokens_for(device: str) -> int:
    """Tokens of one forward: the fast engine's longest chunk on a GPU (a 32K probe in one forward), 2048 on CPU."""
    return CHUNK_CHOICES[0] if device == "cuda" else CPU_CHUNK_TOKENS


class ReuseBackend(LocalBackend):
    name = "reuse"
    label = "prefix reuse on the transformers cache"

    @staticmethod
    def supports(loaded: LoadedModel, options: RunOptions) -> tuple[bool, str]:
        from kanana_longctx.backends.hfcache import supports_reuse

        if options.tp > 1:
            return False, "prefix reuse runs the whole model in one process (--tp uses the plain transformers loop)"
        return supports_reuse(loaded.model)

    def run(self, job: RunJob, sink: GenerationSink) -> LoopStats:
        import torch

        from kanana_longctx.backends.hfcache import PrefixCache, sliding_note

        loaded = self.model.load()
        gpu.reset_peak(loaded.device)
        if not job.pending:
            return LoopStats(0.0)
        t_setup = time.perf_counter()
        shared = np.asarray(job.probe_set.shared_prefix_ids, dtype=np.int64)
        ids = [np.asarray(p.input_ids, dtype=np.int64) for p in job.pending]
        batches = plan_reuse(ids, shared, rows=1)
        computed = planned_flops(ModelShape.from_config(loaded.model.config), batches, [len(x) for x in ids], trimmed=False)
        cache = PrefixCache(loaded.model, chunk_tokens=chunk_tokens_for(loaded.device))
        stop = make_stop(self.model.tokenizer, self.model.stop_ids, job.probe_set.form)
        sink.note(f"reuse engine: the model's own cache, one sequence, {cache.chunk_tokens}-token forwards")
        note = sliding_note(loaded.model)
        if note:
            sink.note(f"reuse engine: {note}")
        seconds = {"prefill": 0.0, "decode": 0.0}
        device = torch.device(loaded.device)
        with torch.inference_mode(), sdpa_context(loaded.attention, device), prefix_attention(loaded.model) as kernel:
            if kernel:
                sink.note(f"reuse engine: {kernel}")
            setup = time.perf_counter() - t_setup
            for batch in batches:
                for step in batch.steps:
                    if isinstance(step, Copy):  # one row: the plan never copies
                        raise AssertionError("a one-row plan copied between rows")
                    tokens = shared if step.source == SHARED else ids[step.source]
                    t = time.perf_counter()
                    cache.extend(tokens[step.begin : step.end], step.begin)
                    gpu.synchronize(loaded.device)
                    seconds["prefill"] += time.perf_counter() - t
                for s in batch.suffixes:
                    sink.write([self._probe(cache, job, s.probe, ids[s.probe], s.start, stop, seconds, loaded.device)])
        gpu.synchronize(loaded.device)
        return LoopStats(computed, seconds["prefill"], seconds["decode"], setup, 1, cache.chunk_tokens)

    def _probe(self, cache, job: RunJob, index: int, ids: np.ndarray, start: int, stop, seconds: dict, device: str):
        """One probe: its suffix from `start`, then greedy decoding; its Generation (seconds: its own work)."""
        t = time.perf_counter()
        logits = cache.extend(ids[start:], start, want_logits=True)
        gpu.synchronize(device)
        t_decode = time.perf_counter()
        out = cache.greedy(logits, max_new_tokens=job.max_new_tokens, stop=stop)
        gpu.synchronize(device)
        t_end = time.perf_counter()
        seconds["prefill"] += t_decode - t
        seconds["decode"] += t_end - t_decode
        probe = job.pending[index]
        return self.model.generation(probe, out, t_end - t, len(ids) - start, stop, job.max_new_tokens)
