"""One writer per run directory: a second process is refused with one line naming the first (pid, host, start),
nothing of the first run's changes, a kill -9 leaves no stale lock, and run.json shows a run in progress before
the model loads."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from typer.testing import CliRunner

from kanana_longctx.cli import app
from kanana_longctx.errors import ResultsError
from kanana_longctx.results import RunInfo, read_run_info, write_run_info
from kanana_longctx.run.lock import LOCK_NAME, acquire, release, run_dir_lock

REPO = Path(__file__).resolve().parents[1]

HOLDER = textwrap.dedent(
    """
    import sys
    from kanana_longctx.run.lock import acquire
    fd = acquire(sys.argv[1], "holder test")
    print("locked", flush=True)
    sys.stdin.read()  # hold the lock until the test closes our stdin (or kills us)
    """
)


def env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(REPO), "COLUMNS": "200"}


def start_holder(out: Path) -> subprocess.Popen:
    """A real second process that holds the run directory's lock."""
    proc = subprocess.Popen([sys.executable, "-c", HOLDER, str(out)], env=env(), stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    line = proc.stdout.readline()
    assert line == "locked\n", line + proc.stderr.read()
    return proc


def test_the_lock_names_its_holder_and_a_second_taker_is_refused(tmp_path):
    out = tmp_path / "run"
    with run_dir_lock(out, "first"):
        record = json.loads((out / LOCK_NAME).read_text())
        assert record["pid"] == os.getpid() and record["host"] == socket.gethostname()
        assert record["command"] == "first" and record["started"].endswith("UTC")
        with pytest.raises(ResultsError, match=rf"in use by process {os.getpid()} on {socket.gethostname()} "
                                               rf"\(first, started {record['started']}\)"):
            acquire(out)  # a second open file: flock refuses it even within one process
    release(acquire(out))  # released at the end of the block


def test_a_refusal_in_the_moment_before_the_holder_writes_its_record_still_names_it(tmp_path):
    """The holder takes the flock and then writes its record; a process refused in between finds the file empty.
    It reads again for a moment (the record lands 50 ms later here) instead of saying 'another process'; with no
    record at all it says that after HOLDER_WAIT_S."""
    import fcntl
    import threading

    from kanana_longctx.run import lock

    out = tmp_path / "run"
    out.mkdir()
    fd = os.open(out / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o644)
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # locked, record not yet written
    try:
        record = json.dumps(lock.holder_record("slow writer")).encode()
        writer = threading.Timer(0.05, lambda: os.pwrite(fd, record, 0))
        writer.start()
        with pytest.raises(ResultsError, match=rf"in use by process {os.getpid()} on .*\(slow writer, started"):
            acquire(out)
        writer.join()
        os.ftruncate(fd, 0)  # a holder that never writes one
        with pytest.raises(ResultsError, match="in use by another process"):
            acquire(out)
    finally:
        os.close(fd)
    release(acquire(out))


def test_two_processes_one_directory_the_second_is_refused_and_kill_9_leaves_no_stale_lock(tmp_path):
    out = tmp_path / "run"
    holder = start_holder(out)
    try:
        with pytest.raises(ResultsError, match=rf"in use by process {holder.pid} on .*holder test"):
            acquire(out)
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    assert (out / LOCK_NAME).exists()  # the file stays behind, the kernel dropped the lock with the process
    fd = acquire(out)  # at once: no stale lock, no timeout
    assert json.loads((out / LOCK_NAME).read_text())["pid"] == os.getpid()
    release(fd)


def _run_info() -> RunInfo:
    return RunInfo(model="smollm2", form="qaform", lang="en", haystack="noise:en", haystack_hash="h",
                   grid={}, seed=0, yarn=None, max_new_tokens=20)


def test_a_real_niah_beside_a_run_in_progress_is_refused_and_changes_nothing(tmp_path):
    """`kanana-longctx niah --overwrite` in its own process, on a directory another process is writing: one line
    naming that process, exit 2, and the results it would have deleted are still there."""
    out = tmp_path / "run"
    out.mkdir()
    write_run_info(out, _run_info())
    (out / "results.jsonl").write_text('{"probe_id": "L500-D0", "length": 500, "depth": 0, "score": 1}\n')
    holder = start_holder(out)
    try:
        before = {p.name: p.read_bytes() for p in out.iterdir()}
        command = [sys.executable, "-m", "kanana_longctx", "niah", "-H", "noise", "-l", "500", "-d", "0",
                   "--device", "cpu", "--out", str(out), "--overwrite"]
        done = subprocess.run(command, env=env(), capture_output=True, text=True, timeout=600)
        assert done.returncode == 2, done.stderr
        assert done.stderr.startswith(f"error: {out} is in use by process {holder.pid}")
        assert done.stderr.count("\n") == 1 and "Traceback" not in done.stderr
        assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    finally:
        holder.stdin.close()
        holder.wait(timeout=60)


def test_a_dry_run_beside_a_run_in_progress_is_refused(tmp_path, monkeypatch, smollm2_tokenizer):
    monkeypatch.setattr("kanana_longctx.tokenizer.load_tokenizer", lambda source, **kw: smollm2_tokenizer)
    out = tmp_path / "run"
    with run_dir_lock(out, "kanana-longctx niah"):
        result = CliRunner().invoke(app, ["niah", "--dry-run", "-l", "500", "-d", "0", "--out", str(out)])
    assert result.exit_code == 2 and "is in use by process" in result.stderr
    assert not (out / "prompts.jsonl").exists()


def test_run_json_is_written_marked_running_before_the_weights_load(tmp_path, smollm2_tokenizer, monkeypatch):
    """What a second process (or a person) sees while the first loads its model: run.json with the run's
    configuration and status running, and the directory locked."""
    from kanana_longctx.backends.local import LocalModel
    from kanana_longctx.options import RunOptions
    from kanana_longctx.probes.build import ProbeRequest, build_probe_set
    from kanana_longctx.run.runner import execute

    out = tmp_path / "run"
    seen = {}

    def load(self):
        seen["info"] = read_run_info(out)
        with pytest.raises(ResultsError, match="in use by process"):
            acquire(out)
        raise ResultsError("stop here: no weights in this test")

    monkeypatch.setattr(LocalModel, "load", load)
    probe_set = build_probe_set(ProbeRequest(lengths=(500,), depths=(0, 100), haystack="noise", seed=3),
                                smollm2_tokenizer)
    with pytest.raises(ResultsError, match="stop here"):
        execute(probe_set, RunOptions(device="cpu"), out, tokenizer=smollm2_tokenizer)
    info = seen["info"]
    assert info is not None and info.extra["status"] == "running" and info.seed == 3
    assert info.grid["lengths"] == [500] and not (out / "results.jsonl").exists()
    release(acquire(out))  # the lock went with the failed run


@pytest.mark.slow
def test_two_real_runs_with_other_seeds_race_for_one_directory_and_never_mix(tmp_path):
    """Two `kanana-longctx niah` processes on the real SmolLM2, started together on one directory with different
    seeds: one runs, the other is refused in one line (by the lock while the first runs, or by the configuration
    check if the first was already done), and every row in the directory is of the winner's seed, once."""
    from kanana_longctx.results import load_results

    out = tmp_path / "run"
    base = [sys.executable, "-m", "kanana_longctx", "niah", "-H", "noise", "-l", "500", "-d", "0,100",
            "--device", "cpu", "--max-new-tokens", "4", "--out", str(out)]
    procs = {seed: subprocess.Popen([*base, "--seed", seed], env=env(), stdout=subprocess.PIPE,
                                    stderr=subprocess.PIPE, text=True) for seed in ("1", "2")}
    outcome = {seed: (proc.wait(timeout=900), proc.stderr.read()) for seed, proc in procs.items()}
    codes = sorted(code for code, _ in outcome.values())
    assert codes == [0, 2], outcome
    winner = next(seed for seed, (code, _) in outcome.items() if code == 0)
    loser_err = next(err for code, err in outcome.values() if code == 2)
    assert loser_err.startswith("error: ") and loser_err.count("\n") == 1, loser_err
    assert (f"in use by process {procs[winner].pid}" in loser_err
            or "different configuration (seed)" in loser_err), loser_err
    records, _ = load_results(out)
    assert sorted(r.probe_id for r in records) == ["L500-D0", "L500-D100"]
    assert {r.seed for r in records} == {int(winner)}
    assert read_run_info(out).seed == int(winner) and read_run_info(out).extra["status"] == "complete"
