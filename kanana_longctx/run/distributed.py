"""Runs over several processes: the torchrun relaunch, sharding a probe grid across data-parallel ranks (one per
GPU), the barriers, and merging the ranks' results.

Usage: torchrun --nproc-per-node 4 -m kanana_longctx niah ...   (or `kanana-longctx niah --gpus 4 ...`)
       code = relaunch(gpus, tp, source, options)  # None: run in this process

Each rank runs the probes `shard()` gives it and appends to its own `results.rank<R>.jsonl` (the same crash-safe
writer as a single run), so ranks never contend for one file. When every rank is done, rank 0 merges the rank
files into `results.jsonl` (skipping rows already there) and removes them. A resumed run counts rows in
`results.jsonl` *and* in leftover rank files as done, so work finished before a crash is never repeated, whatever
the new number of ranks. Tensor-parallel ranks (`--tp`) run every probe together; only rank 0 writes results.
Pure Python apart from the process group (torch.distributed, imported when called).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from kanana_longctx.results import RESULTS_NAME, ResultsWriter, load_results, row_mismatch

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


def tensor_parallel_file(out_dir: Path, rank: RankInfo) -> Path:
    """The scratch results file of a tensor-parallel rank other than the first (removed when the run ends)."""
    return Path(out_dir) / f".tp-rank{rank.rank}.jsonl"


def rank_files(out_dir: Path) -> list[Path]:
    return sorted(Path(out_dir).glob("results.rank*.jsonl"))


def done_ids(out_dir: Path, run: dict | None = None) -> set[str]:
    """probe_ids finished in results.jsonl or in any leftover rank file (torn last lines ignored); with `run` (a
    run.json's object) only rows of that configuration count (kanana_longctx.results.row_mismatch)."""
    ids: set[str] = set()
    for path in [Path(out_dir) / RESULTS_NAME, *rank_files(out_dir)]:
        if path.exists():
            ids.update(r.probe_id for r in load_results(path)[0] if not (run and row_mismatch(r, run)))
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


def finish(out_dir: Path, rank: RankInfo | None, data_parallel: bool) -> None:
    """After this process's probes: drop a tensor-parallel rank's scratch file; wait for every rank, let rank 0
    merge the data-parallel rank files, wait again (the merged results.jsonl is complete for every rank's
    summary), leave the process group."""
    if rank is None:
        return
    if not data_parallel:
        tensor_parallel_file(out_dir, rank).unlink(missing_ok=True)
    barrier()  # every rank has finished its shard
    if rank.rank == 0 and data_parallel:
        merge_rank_results(out_dir)
    barrier()
    destroy_group()


def relaunch_with_torchrun(processes: int) -> int:
    """Run this very command under torchrun with N processes (minus --gpus), the ecosystem's own launcher."""
    import subprocess
    import sys

    args = list(sys.argv[1:])
    for i, arg in enumerate(args):
        if arg == "--gpus":
            del args[i : i + 2]
            break
        if arg.startswith("--gpus="):
            del args[i]
            break
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={processes}",
               "-m", "kanana_longctx", *args]
    return subprocess.call(command)


def relaunch(gpus: int, tp: int, source, options) -> int | None:
    """Outside torchrun, the exit code of this command rerun under it where `--gpus N` asks for data parallelism
    or `--tp N` for transformers' tensor parallelism (where the architecture has a plan: the config is read, no
    weights); None where this process runs the probes itself."""
    if rank_from_env() is not None or (gpus <= 1 and tp <= 1):
        return None
    if gpus > 1:
        return relaunch_with_torchrun(gpus)
    from kanana_longctx.backends.local import has_tensor_parallel_plan, load_config

    if has_tensor_parallel_plan(load_config(source, options)[0]):
        return relaunch_with_torchrun(tp)  # keeps --tp: each rank loads its shard
    return None
