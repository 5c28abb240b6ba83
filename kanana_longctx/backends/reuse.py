"""The reuse backend: prefix reuse on the model's own transformers cache, for every architecture transformers runs
(MoE, MLA, sliding-window and per-layer-type attention) that the fast engine does not cover.

Usage: backend = ReuseBackend(LocalModel(request)); backend.load(); stats = backend.run(job, sink)

The plan is plan.reuse's with one KV row, the one the dry run counts on a CPU (`summarize(..., rows=1)`): the
shared haystack stream is computed once up to the deepest needle, probes run deepest needle first, and each cuts
the cache back to the longest prefix it shares with what the cache holds (the stream, or the previous probe) and
computes only the rest. Prompts are computed one sequence at a time, without padding; each computed prompt's K
and V are then copied into a decoding group (hfcache.DecodeGroup) and the group's probes are decoded greedily
together, one batched step per token, their padding masked: a decoding step of an MoE or MLA forward costs about
as much for one row as for several, and it was 83% of the MoE shape's time one row at a time
(docs/performance.md). Groups are consecutive probes of the plan (plan.memory.decode_groups), as many as the
memory left beside the weights, the one-sequence cache and the prefill's peak holds (at most --batch-size where
given; 4 on a CPU). Outputs are the plain loop's (backends.hf) token for token in float32 (tests). A suffix
attends to the cached prefix through a bottom-right causal SDPA call (kernels.hf_prefix) instead of
transformers' dense mask, so a GPU runs it on a flash kernel.
"""

from __future__ import annotations

import time

import numpy as np

from kanana_longctx.backends import gpu
from kanana_longctx.backends.base import GenerationSink, LoopStats, RunJob
from kanana_longctx.backends.local import LoadedModel, LocalBackend, make_stop
from kanana_longctx.kernels.choice import decode_sdpa_context, sdpa_context
from kanana_longctx.kernels.hf_prefix import model_attention, prefix_attention
from kanana_longctx.options import RunOptions
from kanana_longctx.plan.flops import ModelShape, planned_flops
from kanana_longctx.plan.memory import (
    CHUNK_CHOICES, CPU_DECODE_ROWS, MAX_DECODE_ROWS, decode_groups, gib_bytes, kv_rows_text, run_budget_bytes,
)
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
        decoder = _Decoder(self, job, ids, [s.probe for b in batches for s in b.suffixes], sink)
        sink.note(f"reuse engine: the model's own cache, prompts one sequence at a time in {cache.chunk_tokens}-token "
                  "forwards, decoded together in groups")
        note = sliding_note(loaded.model)
        if note:
            sink.note(f"reuse engine: {note}")
        device = torch.device(loaded.device)
        with torch.inference_mode(), sdpa_context(loaded.attention, device), prefix_attention(loaded.model) as kernel:
            if kernel:
                sink.note(f"reuse engine: {kernel}")
            decoder.seconds["setup"] = time.perf_counter() - t_setup
            for batch in batches:
                for step in batch.steps:
                    if isinstance(step, Copy):  # one row: the plan never copies
                        raise AssertionError("a one-row plan copied between rows")
                    tokens = shared if step.source == SHARED else ids[step.source]
                    t = time.perf_counter()
                    cache.extend(tokens[step.begin : step.end], step.begin)
                    gpu.synchronize(loaded.device)
                    decoder.seconds["prefill"] += time.perf_counter() - t
                for s in batch.suffixes:
                    decoder.prompt(cache, s.probe, s.start)
        gpu.synchronize(loaded.device)
        sink.note(f"reuse engine: {decoder.describe()}")
        sec = decoder.seconds
        return LoopStats(computed, sec["prefill"], sec["decode"], sec["setup"], decoder.widest, cache.chunk_tokens)


class _Decoder:
    """The reuse run's decoding side: each computed prompt joins the current DecodeGroup; a full group is decoded
    and its generations written. The groups are planned when the first prompt is computed: by then the cache
    says what a position takes and the GPU's peak what the prefill needs."""

    def __init__(self, backend: ReuseBackend, job: RunJob, ids: list, order: list[int], sink: GenerationSink):
        self.backend, self.job, self.ids, self.order, self.sink = backend, job, ids, order, sink
        self.loaded = backend.model.load()
        self.seconds = {"prefill": 0.0, "decode": 0.0, "setup": 0.0}
        self.groups: list[list[int]] | None = None
        self.group = None
        self.members: list[int] = []  # the current group's probes, in row order
        self.own: dict[int, tuple[float, int]] = {}  # probe -> (its prefill seconds, tokens it computed)
        self.widest = 0
        self.groups_done = 0
        self.steps = 0  # batched decoding steps over all groups
        self.weights = gpu.allocated_bytes() if self.loaded.device == "cuda" else 0
        options = backend.model.options
        self.max_rows = options.batch_size or (MAX_DECODE_ROWS if self.loaded.device == "cuda" else CPU_DECODE_ROWS)
        self.cap = gib_bytes(options.max_memory_gib)
        self.budget = (run_budget_bytes(gpu.total_bytes(), self.weights, gpu.free_gpu_bytes(), self.cap)
                       if self.loaded.device == "cuda" else float("inf"))
        self.stop = make_stop(backend.model.tokenizer, backend.model.stop_ids, job.probe_set.form)

    def prompt(self, cache, probe: int, start: int) -> None:
        """Compute probe `probe`'s suffix from `start` into `cache`; add it to its group; decode a full group."""
        from kanana_longctx.backends.hfcache import DecodeGroup

        t = time.perf_counter()
        logits = cache.extend(self.ids[probe][start:], start, want_logits=True)
        gpu.synchronize(self.loaded.device)
        elapsed = time.perf_counter() - t
        self.seconds["prefill"] += elapsed
        self.own[probe] = (elapsed, len(self.ids[probe]) - start)
        if self.groups is None:
            self.groups = self._plan(cache)
        if self.group is None:
            members = self.groups.pop(0)
            self.group = DecodeGroup(self.loaded.model, [len(self.ids[self.order[m]]) for m in members],
                                     max_new_tokens=self.job.max_new_tokens)
            self.members = [self.order[m] for m in members]
        self.group.add(cache, logits)
        if self.group.full:
            self._decode()

    def _plan(self, cache) -> list[list[int]]:
        """Decoding groups over the whole order, in the room the budget leaves beside what the run holds at its
        peak so far (weights, the cache, the prefill's activations) and what the cache may still grow by."""
        per_token = cache.kv_bytes_per_token()
        longest = max(len(x) for x in self.ids)
        room = self.budget
        if self.loaded.device == "cuda":
            held = gpu.peak_memory_gib("cuda") * 2**30 - self.weights
            room = self.budget - held - per_token * max(0, longest - cache.length)
        lengths = [len(self.ids[p]) for p in self.order]
        return decode_groups(lengths, room_bytes=room, kv_bytes_per_token=per_token,
                             max_new_tokens=self.job.max_new_tokens, max_rows=self.max_rows)

    def _decode(self) -> None:
        t = time.perf_counter()
        import torch

        device = torch.device(self.loaded.device)
        # one-token steps: transformers' own SDPA (hf_prefix says why), on kernels without per-shape plans
        with model_attention(self.loaded.model), decode_sdpa_context(self.loaded.attention, device):
            outs = self.group.greedy(max_new_tokens=self.job.max_new_tokens, stop=self.stop)
        gpu.synchronize(self.loaded.device)
        seconds = time.perf_counter() - t
        self.seconds["decode"] += seconds
        self.widest = max(self.widest, len(outs))
        self.groups_done += 1
        self.steps += self.group.steps
        model, share = self.backend.model, seconds / len(outs)
        rows = []
        for probe, out in zip(self.members, outs):
            own, tokens = self.own.pop(probe)
            rows.append(model.generation(self.job.pending[probe], out, own + share, tokens, self.stop,
                                         self.job.max_new_tokens))
        self.group = None  # its cache freed before the next group is allocated
        self.sink.write(rows)

    def describe(self) -> str:
        per_step = f", {1e3 * self.seconds['decode'] / self.steps:.1f} ms a step" if self.steps else ""
        return (f"decoded in {self.groups_done} groups of up to {kv_rows_text(self.widest)} (at most {self.max_rows}): "
                f"{self.steps} batched steps{per_step}")
