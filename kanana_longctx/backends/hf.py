"""The plain transformers backend: `generate` on batches of equal-length probes.

Usage: backend = PlainBackend(LocalModel(request)); backend.load(); stats = backend.run(job, sink)
       outputs = generate_batch(loaded, [ids, ids, ...], max_new_tokens=16, stop_ids={eos}, pad_id=0)

Used for models the fast path does not cover, as `--engine hf`, and as the "naive loop" the benchmark compares
against. Even here we never materialise logits for the whole prompt (generate keeps only the last position), and
a batch that runs out of memory is halved and retried instead of crashing the run.
"""

from __future__ import annotations

import time
from collections import defaultdict
from typing import Sequence

from kanana_longctx.backends import gpu
from kanana_longctx.backends.base import GenerationSink, LoopStats, RunJob
from kanana_longctx.backends.local import LoadedModel, LocalBackend, make_stop
from kanana_longctx.kernels.choice import sdpa_context
from kanana_longctx.plan.dims import ModelDims
from kanana_longctx.plan.flops import ModelShape, prefill_flops
from kanana_longctx.plan.memory import dtype_bytes, gib_bytes, plain_batch_size, under_cap
from kanana_longctx.probes.spec import Probe


def _is_oom(exc: BaseException) -> bool:
    import torch

    return isinstance(exc, torch.OutOfMemoryError) or "out of memory" in str(exc).lower()


def generate_batch(loaded, batch: Sequence[Sequence[int]], *, max_new_tokens: int, stop_ids: set[int], pad_id: int):
    """Greedy-generate for equal-length prompts; return the new token ids per prompt (cut at the first stop id)."""
    import torch

    model = loaded.model
    device = next(model.parameters()).device
    input_ids = torch.tensor([list(ids) for ids in batch], dtype=torch.long, device=device)
    attention_mask = torch.ones_like(input_ids)
    with torch.inference_mode(), sdpa_context(loaded.attention, device):
        out = model.generate(
            input_ids=input_ids,
            attention_mask=attention_mask,
            max_new_tokens=max_new_tokens,
            do_sample=False,
            temperature=None,
            top_p=None,
            top_k=None,
            eos_token_id=sorted(stop_ids) or None,
            pad_token_id=pad_id,
        )
    results = []
    for row in out[:, input_ids.shape[1] :].tolist():
        cut = next((i + 1 for i, t in enumerate(row) if t in stop_ids), len(row))
        results.append(row[:cut])
    return results


def generate_with_fallback(loaded, batch, *, max_new_tokens: int, stop_ids: set[int], pad_id: int):
    """Like generate_batch, but halves the batch on out-of-memory (down to one prompt) instead of failing.
    Returns (outputs, batch size that worked)."""
    import torch

    size = len(batch)
    while True:
        try:
            outputs = []
            for i in range(0, len(batch), size):
                outputs += generate_batch(
                    loaded, batch[i : i + size], max_new_tokens=max_new_tokens, stop_ids=stop_ids, pad_id=pad_id
                )
            return outputs, size
        except Exception as exc:  # noqa: BLE001 - only OOM is retried
            if not _is_oom(exc) or size == 1:
                raise
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
            size = max(1, size // 2)


def auto_batch_size(loaded: LoadedModel, tokens: int, max_memory_gib: float = 0.0) -> int:
    """Probes of `tokens` tokens that fit in free GPU memory (KV cache + activations), and under
    `max_memory_gib` with the weights where given (plan.memory.plain_batch_size); 1 on CPU."""
    if loaded.device != "cuda":
        return 1
    room = under_cap(gpu.free_gpu_bytes() * 0.7, gpu.allocated_bytes(), gib_bytes(max_memory_gib))
    return plain_batch_size(ModelDims.from_config(loaded.model.config), tokens, room, dtype_bytes(loaded.dtype))


class PlainBackend(LocalBackend):
    """One `generate` per batch of equal-length probes, longest first; batch size from free memory (or
    --batch-size), halved on out-of-memory."""

    name = "hf"
    label = "plain transformers loop"

    def run(self, job: RunJob, sink: GenerationSink) -> LoopStats:
        loaded = self.model.load()
        gpu.reset_peak(loaded.device)
        shape = ModelShape.from_config(loaded.model.config)
        by_length: dict[int, list[Probe]] = defaultdict(list)
        for p in job.pending:
            by_length[p.n_tokens].append(p)
        computed = 0.0
        for length in sorted(by_length, reverse=True):
            group = by_length[length]
            self._run_group(loaded, group, length, job, sink)
            computed += sum(prefill_flops(shape, p.n_tokens) for p in group)
        gpu.synchronize(loaded.device)
        return LoopStats(computed)

    def _run_group(self, loaded: LoadedModel, group: list[Probe], length: int, job: RunJob, sink) -> None:
        """Probes of one length in batches; a batch that ran out of memory leaves the smaller size for the rest."""
        options, stop_ids, max_new = self.model.options, self.model.stop_ids, job.max_new_tokens
        tokenizer = self.model.tokenizer
        pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else (min(stop_ids) if stop_ids else 0)
        stop = make_stop(tokenizer, stop_ids, job.probe_set.form)
        size = options.batch_size or auto_batch_size(loaded, length + max_new, options.max_memory_gib)
        i = 0
        while i < len(group):
            batch = group[i : i + size]
            t = time.perf_counter()
            outputs, size = generate_with_fallback(
                loaded, [p.input_ids for p in batch], max_new_tokens=max_new, stop_ids=stop_ids, pad_id=pad_id
            )
            seconds = (time.perf_counter() - t) / len(batch)
            sink.write([
                self.model.generation(p, out, seconds, p.n_tokens, stop, max_new) for p, out in zip(batch, outputs)
            ])
            i += len(batch)
