"""A full disk in the middle of a run: the rows written before it stay, a half-written row is skipped by readers
and cut off before the next append, and run.json is the old one or the new one, never half of either.

The disk fills for real, as far as the writing process can tell: it runs with RLIMIT_FSIZE, so the kernel writes
what fits and fails the rest with EFBIG, as a full disk does with ENOSPC (POSIX only)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from kanana_longctx.results import ResultRecord, ResultsWriter, RunInfo, load_results, read_run_info, write_run_info

pytest.importorskip("resource")  # RLIMIT_FSIZE: POSIX only
REPO = Path(__file__).resolve().parents[1]

FILL = textwrap.dedent(
    """
    import errno, json, resource, signal, sys
    from kanana_longctx.results import ResultRecord, ResultsWriter, RunInfo, write_run_info

    out, limit = sys.argv[1], int(sys.argv[2])
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit then fails with EFBIG
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
    row = json.loads(sys.argv[3])
    failed = []
    try:
        with ResultsWriter(out + "/results.jsonl") as writer:
            writer.append([ResultRecord(**{**row, "probe_id": "L500-D100", "output": "x" * 4000})])
    except OSError as exc:
        failed.append(errno.errorcode[exc.errno])
    info = RunInfo(**json.loads(sys.argv[4]))
    try:
        write_run_info(out, RunInfo(**{**info.to_dict(), "extra": {"big": "y" * 100000}}))
    except OSError as exc:
        failed.append(errno.errorcode[exc.errno])
    print(" ".join(failed))
    """
)

ROW = dict(probe_id="L500-D0", length=500, depth=0.0, score=1.0, expected="1234567", output="1234567", n_tokens=500,
           needle_token_start=0)
INFO = dict(model="m", form="qaform", lang="en", haystack="noise:en", haystack_hash="h", grid={}, seed=0, yarn=None,
            max_new_tokens=20)


def test_a_full_disk_loses_nothing_written_and_leaves_no_half_file(tmp_path):
    write_run_info(tmp_path, RunInfo(**INFO))
    with ResultsWriter(tmp_path / "results.jsonl") as writer:
        writer.append([ResultRecord(**ROW)])
    results_before = (tmp_path / "results.jsonl").read_bytes()
    run_before = (tmp_path / "run.json").read_bytes()
    limit = len(results_before) + 1000  # room for a quarter of the next row
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    done = subprocess.run([sys.executable, "-c", FILL, str(tmp_path), str(limit), json.dumps(ROW), json.dumps(INFO)],
                          env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["EFBIG", "EFBIG"]  # both writes really hit the limit
    data = (tmp_path / "results.jsonl").read_bytes()
    assert data.startswith(results_before) and len(results_before) < len(data) <= limit  # a torn row was left
    records, warnings = load_results(tmp_path)
    assert [r.probe_id for r in records] == ["L500-D0"] and "torn last line" in warnings[0]
    assert (tmp_path / "run.json").read_bytes() == run_before and read_run_info(tmp_path) == RunInfo(**INFO)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["results.jsonl", "run.json"]  # no temporary file left
    with ResultsWriter(tmp_path / "results.jsonl") as writer:  # the resumed run: the torn tail is cut first
        writer.append([ResultRecord(**{**ROW, "probe_id": "L500-D100"})])
    assert [r.probe_id for r in load_results(tmp_path)[0]] == ["L500-D0", "L500-D100"]
