"""Data parallel runs: shard a probe grid across processes (one per GPU) and merge their results.

Usage: torchrun --nproc-per-node 4 -m kanana_longctx niah ...   (or `kanana-longctx niah --gpus 4 ...`)

Each rank runs the probes `shard()` gives it and appends to its own `results.rank<R>.jsonl` (the same crash-safe
writer as a single run), so ranks never contend for one file. When every rank is done, rank 0 merges the rank
files into `results.jsonl` (skipping rows already there) and removes them. A resumed run counts rows in
`results.jsonl` *and* in leftover rank files as done, so work finished before a crash is never repeated, whatever
the new number of ranks. Pure Python apart from the barrier.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from kanana_longctx.results import RESULTS_NAME, ResultsWriter, load_results

# Prefill cost of an n-token probe is ~ n x (1 + n / ATTENTION_CROSSOVER): for an 8B Llama, attention FLOPs
# (2 n^2 x 4096 x 32) equal the matmul FLOPs (2 x 7e9 x n) at n ~ 53K tokens.
ATTENTION_CROSSOVER = 53_000


@dataclass(frozen=True)
class RankInfo:
    rank: int
    world: int
    local_rank: int = 0

    @property
    def results_name(self) -> str:
        return f"results.rank{self.rank}.jsonl"


def rank_from_env() -> RankInfo | None:
    """The rank torchrun (or `--gpus`) gave this process, or None for a single-process run."""
    world = int(os.environ.get("WORLD_SIZE", "1") or 1)
    if world <= 1:
        return None
    return RankInfo(int(os.environ.get("RANK", "0")), world, int(os.environ.get("LOCAL_RANK", "0")))


def probe_cost(n_tokens: int) -> float:
    return n_tokens * (1.0 + n_tokens / ATTENTION_CROSSOVER)


def shard(probes, rank: int, world: int) -> list:
    """Longest-processing-time-first: the costliest probes are placed first, each on the least loaded rank.
    Deterministic, so every rank computes the same assignment without talking to the others."""
    loads = [0.0] * world
    mine = []
    for probe in sorted(probes, key=lambda p: (-probe_cost(p.n_tokens), p.probe_id)):
        target = min(range(world), key=lambda r: (loads[r], r))
        loads[target] += probe_cost(probe.n_tokens)
        if target == rank:
            mine.append(probe)
    return mine


def rank_files(out_dir: Path) -> list[Path]:
    return sorted(Path(out_dir).glob("results.rank*.jsonl"))


def done_ids(out_dir: Path) -> set[str]:
    """probe_ids finished in results.jsonl or in any leftover rank file (torn last lines ignored)."""
    ids: set[str] = set()
    for path in [Path(out_dir) / RESULTS_NAME, *rank_files(out_dir)]:
        if path.exists():
            ids.update(r.probe_id for r in load_results(path)[0])
    return ids


def merge_rank_results(out_dir: Path) -> int:
    """Append the rank files' rows that results.jsonl lacks, then delete the rank files. Returns rows added."""
    out_dir = Path(out_dir)
    main = out_dir / RESULTS_NAME
    present = {r.probe_id for r in load_results(main)[0]} if main.exists() else set()
    added = 0
    with ResultsWriter(main) as writer:
        for path in rank_files(out_dir):
            fresh = [r for r in load_results(path)[0] if r.probe_id not in present]
            writer.append(fresh)
            present.update(r.probe_id for r in fresh)
            added += len(fresh)
    for path in rank_files(out_dir):  # only after every row is durably in results.jsonl
        path.unlink()
    return added


def init_group(rank: RankInfo) -> None:
    """Join the process group for barriers (gloo: works for CPU and GPU processes and needs no NCCL)."""
    import torch.distributed as dist

    if not dist.is_initialized():
        dist.init_process_group(backend="gloo", rank=rank.rank, world_size=rank.world)


def barrier() -> None:
    import torch.distributed as dist

    dist.barrier()


def destroy_group() -> None:
    import torch.distributed as dist

    if dist.is_initialized():
        dist.destroy_process_group()
