"""Running a probe set: orchestration only (torch only inside the backends it calls).

Usage: summary = execute(probe_set, RunOptions(), out_dir)  # .runner

Modules: runner.py (the phases of a run), context.py (the RunContext they share), check.py (the cheap checks),
rundir.py (resume and refusal), records.py (generations to scored records), distributed.py (torchrun, shards,
barriers, merging), reporting.py (progress and the end-of-run summary).
"""
