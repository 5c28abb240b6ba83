"""The fast backend: probes on the prefix-reusing Llama engine (kanana_longctx.fastpath), planned by
kanana_longctx.plan (which KV each probe reuses, KV rows and prefill chunk, the FLOPs it computes).

Usage: backend = FastBackend(LocalModel(request)); backend.load(); stats = backend.run(job, sink)

The shared haystack stream is computed once, the common part of probes that hold the same needle at the same place
once, then each probe's own suffix. Probes go in batches, one KV buffer row each: a batch's suffixes are prefilled
together (short ones share one forward) and then decoded together.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np

from kanana_longctx.backends import gpu
from kanana_longctx.backends.base import GenerationSink, LoopStats, RunJob
from kanana_longctx.backends.local import LoadedModel, LocalBackend, make_stop
from kanana_longctx.kernels import choice
from kanana_longctx.options import RunOptions
from kanana_longctx.plan.dims import ModelDims
from kanana_longctx.plan.flops import ModelShape, planned_flops
from kanana_longctx.plan.memory import (
    MemoryPlan, buffer_tokens_for, chunk_bytes_per_token, dtype_bytes, gib_bytes, plan_memory, row_kv_bytes,
    run_budget_bytes,
)
from kanana_longctx.plan.reuse import SHARED, Batch, Copy, plan_reuse


def memory_plan_for(loaded: LoadedModel, buffer_tokens: int, probes: int, max_memory_gib: float = 0.0,
                    tile: int = 0) -> MemoryPlan:
    """KV rows and prefill chunk of a fast run (kanana_longctx.plan.memory says how they are chosen) for a buffer
    of `buffer_tokens` positions rounded up to the attention `tile`, under `max_memory_gib` (0: no cap) where
    given; on the CPU one row and 2048-token chunks (no graphs there, so nothing to share in decoding)."""
    if loaded.device != "cuda":
        return MemoryPlan(rows=1, chunk_tokens=2048, planned_bytes=0, budget_bytes=0)
    dims, elem = ModelDims.from_config(loaded.model.config), dtype_bytes(loaded.dtype)
    total = gpu.total_bytes()
    budget = run_budget_bytes(total, gpu.allocated_bytes(), gpu.free_gpu_bytes(), gib_bytes(max_memory_gib))
    return plan_memory(
        row_bytes=row_kv_bytes(dims, buffer_tokens_for(buffer_tokens, tile), elem),
        chunk_bytes_per_token=chunk_bytes_per_token(dims.hidden, dims.ffn, elem),
        budget_bytes=budget,
        probes=probes,
    )


@dataclass
class _FastRun:
    """One run on the engine: the probes' ids, the plan, the engine built for it and where the time went."""

    job: RunJob
    shared: np.ndarray
    ids: list[np.ndarray]
    batches: list[Batch]
    memory: MemoryPlan
    engine: object  # fastpath.llama.PrefixReusingLlama
    stop: object
    seconds: dict = field(default_factory=lambda: {"prefill": 0.0, "decode": 0.0, "setup": 0.0})


class FastBackend(LocalBackend):
    name = "fast"
    label = "the fast prefix-reusing engine"

    @staticmethod
    def supports(loaded: LoadedModel, options: RunOptions) -> tuple[bool, str]:
        from kanana_longctx.fastpath.llama import supports_fast_path

        if options.tp > 1:
            return False, "the fast path needs the whole model on one device (--tp uses the transformers loop)"
        return supports_fast_path(loaded.model)

    def run(self, job: RunJob, sink: GenerationSink) -> LoopStats:
        loaded = self.model.load()
        gpu.reset_peak(loaded.device)
        if not job.pending:
            return LoopStats(0.0)
        t_setup = time.perf_counter()
        run = self._prepare(job, loaded, sink)
        computed = planned_flops(
            ModelShape.from_config(loaded.model.config), run.batches, [len(x) for x in run.ids],
            trimmed=run.engine.trim_last_layer,
        )
        gpu.synchronize(loaded.device)
        t_prefill = time.perf_counter()
        run.seconds["setup"] = t_prefill - t_setup
        for batch in run.batches:
            prefilled, t_decode = self._prefill(run, batch, loaded.device)
            run.seconds["prefill"] += t_decode - t_prefill
            self._decode(run, prefilled, sink)
            t_prefill = time.perf_counter()
            run.seconds["decode"] += t_prefill - t_decode
        for note in [*run.engine.fallback_notes(), run.engine.compile_note()]:
            if note:
                sink.note(f"fast engine: {note}")
        gpu.synchronize(loaded.device)
        seconds = run.seconds
        return LoopStats(
            computed, seconds["prefill"], seconds["decode"], seconds["setup"], run.memory.rows, run.engine.chunk_tokens
        )

    def _prepare(self, job: RunJob, loaded: LoadedModel, sink: GenerationSink) -> _FastRun:
        """Plan the reuse and the memory, build the engine for them and say what it runs."""
        from kanana_longctx.fastpath.llama import PrefixReusingLlama

        options = self.model.options
        shared = np.asarray(job.probe_set.shared_prefix_ids, dtype=np.int64)
        ids = [np.asarray(p.input_ids, dtype=np.int64) for p in job.pending]
        buffer_tokens = max(p.n_tokens for p in job.pending) + job.max_new_tokens + 1
        tile = choice.tile_tokens(loaded.attention, loaded.device)  # the one tile both the plan and engine use
        memory = memory_plan_for(loaded, buffer_tokens, len(job.pending), options.max_memory_gib, tile)
        batches = plan_reuse(ids, shared, memory.rows)
        engine = PrefixReusingLlama(
            loaded, max_tokens=buffer_tokens, chunk_tokens=memory.chunk_tokens, rows=memory.rows, tile_tokens=tile,
            plans=choice.CudnnPlans(),
        )
        stop = make_stop(self.model.tokenizer, self.model.stop_ids, job.probe_set.form)
        sink.note(f"fast engine: {engine.describe()}")
        if memory.budget_bytes:
            sink.note(f"memory: {memory.describe()}")
        return _FastRun(job, shared, ids, batches, memory, engine, stop)

    @staticmethod
    def _prefill(run: _FastRun, batch: Batch, device: str):
        """A batch's copies and shared parts (all before its prefill overwrites anything), then its suffixes;
        returns (probe, row, first logits, own prefill seconds, prefill tokens) per suffix and the time it ended."""
        engine, ids = run.engine, run.ids
        for step in batch.steps:
            if isinstance(step, Copy):
                engine.kv.copy_prefix(step.src, step.dst, step.begin, step.end)
                continue
            if step.source == SHARED:
                engine.prefill_stream(run.shared[step.begin : step.end], step.begin, row=step.row)
            else:
                engine.prefill(ids[step.source][step.begin : step.end], step.begin, row=step.row, want_logits=False)
        t = time.perf_counter()
        logits = engine.prefill_rows([(ids[s.probe][s.start :], s.start, s.row) for s in batch.suffixes])
        gpu.synchronize(device)
        t_decode = time.perf_counter()
        share = (t_decode - t) / len(batch.suffixes)
        prefilled = [
            (run.job.pending[s.probe], s.row, first, share, len(ids[s.probe]) - s.start)
            for s, first in zip(batch.suffixes, logits)
        ]
        return prefilled, t_decode

    def _decode(self, run: _FastRun, batch, sink: GenerationSink) -> None:
        """Decode a batch of prefilled probes together and hand over their generations (seconds: own prefill + a
        share of the batch's decoding)."""
        max_new = run.job.max_new_tokens
        t = time.perf_counter()
        outputs = run.engine.decode_rows([(row, logits, p.n_tokens, run.stop) for p, row, logits, _, _ in batch], max_new)
        share = (time.perf_counter() - t) / len(batch)
        sink.write([
            self.model.generation(p, out, seconds + share, prefill_tokens, run.stop, max_new)
            for (p, _, _, seconds, prefill_tokens), out in zip(batch, outputs)
        ])
