"""The run directory: refuse to mix configurations, find the probes already done (resume), name the file this
process appends to.

Usage: done = prepare_out_dir(out_dir, info, overwrite=False); path = results_path(out_dir, rank, data_parallel)

A row counts as done only when its own record (seed, language, form, haystack, task, answer budget, grid cell)
matches the run's configuration: a row of another run that found its way into the file is never taken for ours.
"""

from __future__ import annotations

from pathlib import Path

from kanana_longctx.errors import ResultsError
from kanana_longctx.results import RESULTS_NAME, RunInfo, load_results, read_run_info, select_rows
from kanana_longctx.run.distributed import RankInfo, done_ids, rank_files, tensor_parallel_file


def prepare_out_dir(out_dir: Path, info: RunInfo, overwrite: bool, first_rank: bool = True) -> set[str]:
    """Check `out_dir` against `info`; return the probe_ids already done. Refuses to mix configurations.
    `--overwrite` clears the results (on the first rank only: the others wait for it at a barrier)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    results = out_dir / RESULTS_NAME
    previous = read_run_info(out_dir)
    if overwrite:
        if first_rank:
            for path in [results, *rank_files(out_dir)]:
                path.unlink(missing_ok=True)
        return set()
    if previous is None:
        if (results.exists() and results.stat().st_size > 0) or rank_files(out_dir):
            raise ResultsError(f"{out_dir} holds results.jsonl without run.json; use --overwrite or another --out")
        return set()
    old, new = previous.fingerprint(), info.fingerprint()
    if old != new:
        changed = ", ".join(k for k in new if old.get(k) != new.get(k))
        raise ResultsError(
            f"{out_dir} holds a run with a different configuration ({changed}); use --overwrite or another --out"
        )
    return done_ids(out_dir, info.to_dict())  # results.jsonl and rank files a crashed data-parallel run left behind


def row_warnings(out_dir: Path, info: RunInfo) -> list[str]:
    """What resuming ignores in the directory's result files: rows of another configuration than `info` (their
    probes run again) and repeated rows of one probe, one warning per kind and file."""
    warnings: list[str] = []
    for path in [out_dir / RESULTS_NAME, *rank_files(out_dir)]:
        if path.exists():
            warnings += select_rows(load_results(path)[0], info.to_dict(), path)[1]
    return warnings


def results_path(out_dir: Path, rank: RankInfo | None, data_parallel: bool) -> Path:
    """Where this process appends its records: results.jsonl, a data-parallel rank's own file (merged at the end),
    or for a tensor-parallel rank other than the first a scratch file (rank 0 writes the results)."""
    if rank and not data_parallel and rank.rank != 0:
        return tensor_parallel_file(out_dir, rank)
    return out_dir / (rank.results_name if data_parallel else RESULTS_NAME)
