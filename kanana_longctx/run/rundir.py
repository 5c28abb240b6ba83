"""The run directory: refuse to mix configurations, find the probes already done (resume).

Usage: done = prepare_out_dir(out_dir, info, overwrite=False)
"""

from __future__ import annotations

from pathlib import Path

from kanana_longctx.errors import ResultsError
from kanana_longctx.results import RESULTS_NAME, RunInfo, read_run_info


def prepare_out_dir(out_dir: Path, info: RunInfo, overwrite: bool, first_rank: bool = True) -> set[str]:
    """Check `out_dir` against `info`; return the probe_ids already done. Refuses to mix configurations."""
    from kanana_longctx.run.distributed import done_ids, rank_files

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
    return done_ids(out_dir)  # results.jsonl and rank files a crashed data-parallel run left behind
