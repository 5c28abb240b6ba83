"""An output directory that cannot be written is refused in one line before anything slow (tokenizer, probes,
weights) and before anything is created: `--out` inside a file, a read-only mount (a real one where this machine
lets a test make it: tests run as root, which chmod alone does not stop), and the check itself on a directory
os.access says no to (monkeypatched: the one case a root test cannot make without a mount)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from kanana_longctx.cli import app
from kanana_longctx.errors import BadInput
from kanana_longctx.writable import check_writable_dir

REPO = Path(__file__).resolve().parents[1]
runner = CliRunner()


@pytest.fixture
def no_tokenizer(monkeypatch):
    """Fail loudly if niah gets as far as loading a tokenizer."""
    def load(*args, **kwargs):
        raise AssertionError("the tokenizer was loaded before the output directory was checked")

    monkeypatch.setattr("kanana_longctx.tokenizer.load_tokenizer", load)


def _one_line(result, fragment: str) -> None:
    assert result.exit_code == 2, result.output
    assert result.stderr.startswith("error: ") and result.stderr.count("\n") == 1, result.stderr
    assert fragment in result.stderr and "Traceback" not in result.output and ".tmp" not in result.stderr


@pytest.mark.parametrize("dry_run", [["--dry-run"], []], ids=["dry-run", "run"])
def test_out_inside_a_file_is_refused_before_the_tokenizer(tmp_path, no_tokenizer, dry_run):
    blocker = tmp_path / "notes.txt"
    blocker.write_text("a file\n", encoding="utf-8")
    result = runner.invoke(app, ["niah", *dry_run, "--out", str(blocker / "run")])
    _one_line(result, f"--out {blocker / 'run'} cannot be created: {blocker} is not a directory")
    assert blocker.read_text(encoding="utf-8") == "a file\n" and sorted(tmp_path.iterdir()) == [blocker]


def test_out_that_is_a_file_is_refused(tmp_path, no_tokenizer):
    blocker = tmp_path / "run"
    blocker.write_text("", encoding="utf-8")
    _one_line(runner.invoke(app, ["niah", "--out", str(blocker)]), f"--out {blocker} is not a directory")


def test_the_check_refuses_what_os_access_denies_and_creates_nothing(tmp_path, monkeypatch):
    denied = tmp_path / "ro"
    denied.mkdir()
    real = os.access
    monkeypatch.setattr(os, "access", lambda p, mode, **kw: False if Path(p) == denied else real(p, mode, **kw))
    with pytest.raises(BadInput, match=r"--out .*ro/new/run cannot be written: no permission to create files in "):
        check_writable_dir(denied / "new" / "run")
    with pytest.raises(BadInput, match="in this directory"):
        check_writable_dir(denied)
    check_writable_dir(tmp_path / "fine" / "deep")  # a writable ancestor: nothing to say
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ro"] and not any(denied.iterdir())


def test_a_dangling_link_is_named(tmp_path):
    (tmp_path / "link").symlink_to(tmp_path / "gone")
    with pytest.raises(BadInput, match="is a broken link"):
        check_writable_dir(tmp_path / "link" / "run")


def test_the_runner_checks_before_loading(tmp_path, monkeypatch, smollm2_tokenizer):
    """The library path (execute) refuses too, before the backend loads anything."""
    from kanana_longctx.options import RunOptions
    from kanana_longctx.probes.build import ProbeRequest, build_probe_set
    from kanana_longctx.run import runner as run_runner

    loads = []
    monkeypatch.setattr(run_runner, "load", lambda ctx: loads.append(ctx))
    denied = tmp_path / "ro"
    denied.mkdir()
    real = os.access
    monkeypatch.setattr(os, "access", lambda p, mode, **kw: False if Path(p) == denied else real(p, mode, **kw))
    probes = build_probe_set(ProbeRequest(lengths=(300,), depths=(50,), haystack="noise"), smollm2_tokenizer)
    with pytest.raises(BadInput, match="run directory .* cannot be written"):
        run_runner.execute(probes, RunOptions(model="smollm2", device="cpu"), denied, tokenizer=smollm2_tokenizer)
    assert not loads and not any(denied.iterdir())


def _can_mount_read_only(directory: Path) -> bool:
    if not shutil.which("unshare"):
        return False
    probe = subprocess.run(["unshare", "-m", "sh", "-c", f"mount --bind -o ro '{directory}' '{directory}'"],
                           capture_output=True)
    return probe.returncode == 0


def test_a_real_read_only_directory_as_root_or_not(tmp_path):
    """`niah --out` on a read-only bind mount (a private mount namespace): refused before the tokenizer is even
    converted (the empty cache directory stays empty), with one line and no temporary file's name."""
    target = tmp_path / "ro"
    target.mkdir()
    if not _can_mount_read_only(target):
        pytest.skip("cannot make a read-only bind mount here (needs unshare and mount rights)")
    cache = tmp_path / "cache"
    cache.mkdir()
    env = {**os.environ, "PYTHONPATH": str(REPO), "KANANA_LONGCTX_CACHE": str(cache)}
    script = (f"mount --bind -o ro '{target}' '{target}' && exec '{sys.executable}' -m kanana_longctx niah "
              f"-l 300 -d 50 --out '{target}/run'")
    result = subprocess.run(["unshare", "-m", "sh", "-c", script], capture_output=True, text=True, env=env,
                            timeout=300)
    assert result.returncode == 2, result.stderr
    assert result.stderr == (f"error: --out {target}/run cannot be written: no permission to create files in "
                             f"{target} (or a read-only file system)\n")
    assert not any(cache.iterdir()) and not any(target.iterdir())
