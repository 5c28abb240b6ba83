"""The probe loops of a run: the fast prefix-reusing loop and the plain transformers loop, and what both share
(stop criteria, turning generated ids into a scored record).

Usage: stats = run_fast(loaded, probe_set, pending, tokenizer, stop_ids, max_new, options, writer, reporter)
"""

from __future__ import annotations

import time
from collections import defaultdict
from dataclasses import dataclass

from kanana_longctx.probes.spec import Probe
from kanana_longctx.results import ResultRecord
from kanana_longctx.run.scoring import result_record


@dataclass(frozen=True)
class LoopStats:
    """What a probe loop did: the prefill FLOPs it computed and, for the fast loop, where its time went (prefill
    and decode seconds, the GPU synchronised at every switch, and the setup before the first probe: planning,
    buffers, weight fusing; 0.0 where the loop cannot tell them apart) and the KV rows and prefill chunk it ran
    with (0 for the plain loop)."""

    computed_flops: float
    prefill_seconds: float = 0.0
    decode_seconds: float = 0.0
    setup_seconds: float = 0.0
    kv_rows: int = 0
    chunk_tokens: int = 0


def stop_token_ids(tokenizer, model) -> set[int]:
    ids: set[int] = set()
    for value in (tokenizer.eos_token_id, getattr(model.generation_config, "eos_token_id", None)):
        if isinstance(value, int):
            ids.add(value)
        elif isinstance(value, (list, tuple)):
            ids.update(int(v) for v in value)
    for token in ("<|im_end|>", "<|eot_id|>", "<|end_of_text|>", "</s>"):
        tid = tokenizer.convert_tokens_to_ids(token)
        if isinstance(tid, int) and tid >= 0 and tid != tokenizer.unk_token_id:
            ids.add(tid)
    return ids


def clean_output(text: str, form: str) -> str:
    """Retform completions end at the first line break after some content (base models ramble on)."""
    if form == "retform":
        stripped = text.lstrip()
        cut = stripped.find("\n")
        return stripped if cut < 0 else stripped[:cut]
    return text.strip()


def _record(
    probe: Probe, output_ids, tokenizer, seconds: float, prefill_tokens: int, max_new: int, stop
) -> ResultRecord:
    """Score a finished probe; `stop` tells whether decoding ended by itself (an answer that did not was cut off
    by the budget: its outcome can be "truncated")."""
    text = clean_output(tokenizer.decode(output_ids, skip_special_tokens=True), probe.form)
    stopped = bool(output_ids) and stop(list(output_ids))
    return result_record(
        probe, text, new_tokens=len(output_ids), max_new_tokens=max_new, stopped=stopped, seconds=seconds,
        prefill_tokens=prefill_tokens,
    )


def _make_stop(tokenizer, stop_ids: set[int], form: str):
    def stop(out: list[int]) -> bool:
        if out[-1] in stop_ids:
            return True
        if form == "retform":
            text = tokenizer.decode(out, skip_special_tokens=True)
            return "\n" in text.lstrip()
        return False

    return stop


def memory_plan_for(loaded, buffer_tokens: int, probes: int, max_memory_gib: float = 0.0):
    """KV rows and prefill chunk of a fast run (kanana_longctx.run.memory_plan says how they are chosen), under
    `max_memory_gib` (0: no cap) where given; on the CPU one row and 2048-token chunks (no graphs there, so
    nothing to share in decoding)."""
    from kanana_longctx.run.memory_plan import (
        MemoryPlan, chunk_bytes_per_token, gib_bytes, plan_memory, run_budget_bytes,
    )

    if loaded.device != "cuda":
        return MemoryPlan(rows=1, chunk_tokens=2048, planned_bytes=0, budget_bytes=0)
    import torch

    from kanana_longctx.run.fast_llama import buffer_tokens_for, default_tile_tokens, row_kv_bytes

    buffer_tokens = buffer_tokens_for(buffer_tokens, default_tile_tokens(loaded.attention, "cuda"))
    cfg, elem = loaded.model.config, _element_size(loaded)
    _, total = torch.cuda.mem_get_info()
    budget = run_budget_bytes(total, torch.cuda.memory_allocated(), free_gpu_bytes(), gib_bytes(max_memory_gib))
    return plan_memory(
        row_bytes=row_kv_bytes(cfg, buffer_tokens, elem),
        chunk_bytes_per_token=chunk_bytes_per_token(cfg.hidden_size, cfg.intermediate_size, elem),
        budget_bytes=budget,
        probes=probes,
    )


def run_fast(loaded, probe_set, pending, tokenizer, stop_ids, max_new, options, writer, reporter) -> LoopStats:
    """Prefix reuse as `kanana_longctx.run.reuse_plan` plans it: the shared haystack stream once, the common part of
    probes that hold the same needle at the same place once, then each probe's own suffix. Probes go in batches, one
    KV buffer row each (kanana_longctx.run.fast_llama explains the rows): a batch's suffixes are prefilled together
    (short ones share one forward) and then decoded together."""
    import numpy as np

    from kanana_longctx.run.fast_llama import PrefixReusingLlama
    from kanana_longctx.run.flops import ModelShape, span_flops
    from kanana_longctx.run.reuse_plan import SHARED, Copy, plan_reuse, planned_work

    if not pending:
        return LoopStats(0.0)
    t_setup = time.perf_counter()
    shape = ModelShape.from_config(loaded.model.config)
    shared = np.asarray(probe_set.shared_prefix_ids, dtype=np.int64)
    ids = [np.asarray(p.input_ids, dtype=np.int64) for p in pending]
    buffer_tokens = max(p.n_tokens for p in pending) + max_new + 1
    memory = memory_plan_for(loaded, buffer_tokens, len(pending), options.max_memory_gib)
    batches = plan_reuse(ids, shared, memory.rows)
    fast = PrefixReusingLlama(loaded, max_tokens=buffer_tokens, chunk_tokens=memory.chunk_tokens, rows=memory.rows)
    stop = _make_stop(tokenizer, stop_ids, probe_set.form)
    reporter.note(f"fast engine: {fast.describe()}")
    if memory.budget_bytes:
        reporter.note(f"memory: {memory.describe()}")
    computed = sum(
        span_flops(shape, begin, end - begin, logits=logits, trimmed=fast.trim_last_layer)
        for begin, end, logits in planned_work(batches, [len(x) for x in ids])
    )
    _synchronize(loaded)
    t_prefill = time.perf_counter()
    seconds = {"prefill": 0.0, "decode": 0.0, "setup": t_prefill - t_setup}
    for batch in batches:
        for step in batch.steps:  # copies and shared parts, all before the batch's prefill overwrites anything
            if isinstance(step, Copy):
                fast.copy_prefix(step.src, step.dst, step.begin, step.end)
                continue
            if step.source == SHARED:
                fast.prefill_stream(shared[step.begin : step.end], step.begin, row=step.row)
            else:
                fast.prefill(ids[step.source][step.begin : step.end], step.begin, row=step.row, want_logits=False)
        t = time.perf_counter()
        logits = fast.prefill_rows([(ids[s.probe][s.start :], s.start, s.row) for s in batch.suffixes])
        _synchronize(loaded)
        t_decode = time.perf_counter()
        seconds["prefill"] += t_decode - t_prefill
        share = (t_decode - t) / len(batch.suffixes)
        prefilled = [
            (pending[s.probe], s.row, first, share, len(ids[s.probe]) - s.start)
            for s, first in zip(batch.suffixes, logits)
        ]
        _decode_batch(fast, prefilled, tokenizer, stop, max_new, writer, reporter)
        t_prefill = time.perf_counter()
        seconds["decode"] += t_prefill - t_decode
    for note in [*fast.fallback_notes(), fast.compile_note()]:
        if note:
            reporter.note(f"fast engine: {note}")
    return LoopStats(
        computed, seconds["prefill"], seconds["decode"], seconds["setup"], memory.rows, fast.chunk_tokens
    )


def _synchronize(loaded) -> None:
    if loaded.device == "cuda":
        import torch

        torch.cuda.synchronize()


def _decode_batch(fast, batch, tokenizer, stop, max_new, writer, reporter) -> None:
    """Decode a batch of prefilled probes together; write their records (seconds: own prefill + a share of the
    batch's decoding)."""
    t = time.perf_counter()
    outputs = fast.decode_rows([(row, logits, p.n_tokens, stop) for p, row, logits, _, _ in batch], max_new)
    share = (time.perf_counter() - t) / len(batch)
    records = [
        _record(p, out, tokenizer, seconds + share, prefill_tokens, max_new, stop)
        for (p, _, _, seconds, prefill_tokens), out in zip(batch, outputs)
    ]
    writer.append(records)
    for record in records:
        reporter.advance(record)


def run_hf(loaded, probe_set, pending, tokenizer, stop_ids, max_new, options, writer, reporter) -> LoopStats:
    """One `generate` per batch of equal-length probes; batch size from free memory, halved on OOM."""
    from kanana_longctx.run.flops import ModelShape, prefill_flops
    from kanana_longctx.run.hf_loop import generate_with_fallback

    shape = ModelShape.from_config(loaded.model.config)
    by_length: dict[int, list[Probe]] = defaultdict(list)
    for p in pending:
        by_length[p.n_tokens].append(p)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else (min(stop_ids) if stop_ids else 0)
    stop = _make_stop(tokenizer, stop_ids, probe_set.form)
    computed = 0.0
    for length in sorted(by_length, reverse=True):
        group = by_length[length]
        size = options.batch_size or auto_batch_size(loaded, length + max_new, options.max_memory_gib)
        for i in range(0, len(group), size):
            batch = group[i : i + size]
            t = time.perf_counter()
            outputs, size = generate_with_fallback(
                loaded, [p.input_ids for p in batch], max_new_tokens=max_new, stop_ids=stop_ids, pad_id=pad_id
            )
            seconds = (time.perf_counter() - t) / len(batch)
            records = [_record(p, out, tokenizer, seconds, p.n_tokens, max_new, stop) for p, out in zip(batch, outputs)]
            writer.append(records)
            for r in records:
                reporter.advance(r)
            computed += sum(prefill_flops(shape, p.n_tokens) for p in batch)
    return LoopStats(computed)


def auto_batch_size(loaded, tokens: int, max_memory_gib: float = 0.0) -> int:
    """Probes of `tokens` tokens that fit in free GPU memory (KV cache + activations), and under
    `max_memory_gib` with the weights where given; at most 16; 1 on CPU."""
    if loaded.device != "cuda":
        return 1
    import torch

    from kanana_longctx.run.fast_llama import row_kv_bytes
    from kanana_longctx.run.memory_plan import gib_bytes, under_cap

    cfg = loaded.model.config
    elem = _element_size(loaded)
    per_token = row_kv_bytes(cfg, 1, elem) + 6 * cfg.intermediate_size * elem
    room = under_cap(free_gpu_bytes() * 0.7, torch.cuda.memory_allocated(), gib_bytes(max_memory_gib))
    return max(1, min(16, int(room // (per_token * tokens))))


def free_gpu_bytes() -> int:
    """Free GPU memory, counting what PyTorch's caching allocator holds without using it: after an earlier run
    in the same process (a benchmark's second grid) that memory is ours to use, though the driver reports it as
    taken; without it the second run would get fewer decode rows than the first."""
    import torch

    free, _ = torch.cuda.mem_get_info()
    return free + torch.cuda.memory_reserved() - torch.cuda.memory_allocated()


def _element_size(loaded) -> int:
    return 4 if loaded.dtype == "float32" else 2
