"""Backups that cannot lie, a read-only HF blob, and two processes on one config file."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from kanana_longctx.errors import BadInput, ConfigError
from kanana_longctx.filelock import exclusive_lock, lock_path
from kanana_longctx.yarn import files
from kanana_longctx.yarn.params import YarnParams
from test_yarn_files import config  # noqa: F401  (the fixture: a copy of the example in its own directory)

REPO = Path(__file__).resolve().parents[1]
EXAMPLE = REPO / "examples" / "kanana-like-8b-config.json"


def state(directory: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(directory.iterdir())}


def edit_backup(config: Path, **changes) -> None:
    sidecar = files.backup_path(config)
    record = json.loads(sidecar.read_text())
    record.update(changes)
    sidecar.write_text(json.dumps(record))


def test_backup_whose_text_no_longer_matches_its_hash_is_refused(config):
    files.apply_yarn_file(config, YarnParams())
    record = json.loads(files.backup_path(config).read_text())
    edit_backup(config, original_text=record["original_text"].replace('"use_cache": true', '"use_cache": false'))
    before = state(config.parent)
    with pytest.raises(ConfigError, match="does not match its own hash"):
        files.remove_yarn_file(config)
    assert state(config.parent) == before


@pytest.mark.parametrize(
    "changes,fragment",
    [
        ({"replaced": "rope_scaling"}, "'replaced' must map key names"),
        ({"replaced": {"rope_scaling": 3}}, "'replaced' must map key names"),
        ({"params": 5}, "'params' must be an object"),
        ({"params": {"factor": 1e308}}, "factor must be at most 128"),
        ({"original_sha256": 123}, "'original_sha256' is not a SHA-256"),
        ({"original_text": ["x"]}, "'original_text' must be a string"),
        ({"layer_types": "full_attention"}, "'layer_types' must be a list"),
        ({"format": 99}, "not a kanana-longctx backup record of format 1"),
    ],
)
def test_backup_with_wrong_types_is_one_clear_error(config, changes, fragment):
    files.apply_yarn_file(config, YarnParams())
    edit_backup(config, **changes)
    before = state(config.parent)
    with pytest.raises(ConfigError, match=f"is not usable: .*{fragment}"):
        files.remove_yarn_file(config)
    with pytest.raises(ConfigError, match="is not usable"):
        files.apply_yarn_file(config, YarnParams(factor=2.0))
    assert state(config.parent) == before


@pytest.mark.parametrize("text", ["[1, 2]", '"a string"', "{", "[" * 5000 + "]" * 5000])
def test_backup_that_is_not_an_object_is_one_clear_error(config, text):
    files.apply_yarn_file(config, YarnParams())
    files.backup_path(config).write_text(text)
    before = state(config.parent)
    with pytest.raises(ConfigError):
        files.remove_yarn_file(config)
    assert state(config.parent) == before


def _edited_original(config: Path) -> None:
    """The user puts an edited copy of the original in place, without YaRN, and forgets the sidecar."""
    config.write_text(EXAMPLE.read_text().replace('"use_cache": true', '"use_cache": false'))


def _factor_changed_by_hand(config: Path) -> None:
    config.write_text(config.read_text().replace('"factor": 4.4', '"factor": 2.0'))


@pytest.mark.parametrize(
    "edit,found",
    [
        (_edited_original, r"no longer holds the YaRN its backup recorded .* found rope type 'default'"),
        (_factor_changed_by_hand, r"found other YaRN in rope_scaling \(factor 2 over 32768"),
    ],
)
def test_no_yarn_acts_only_on_the_yarn_the_backup_recorded(config, edit, found):
    files.apply_yarn_file(config, YarnParams())
    edit(config)
    before = state(config.parent)
    with pytest.raises(ConfigError, match=found):
        files.remove_yarn_file(config)
    assert state(config.parent) == before


def test_publisher_yarn_is_replaced_only_when_forced_and_comes_back(config):
    shipped = files.apply_yarn_file(config, YarnParams(factor=2.0), dry_run=True).new_text
    config.write_text(shipped)  # YaRN the file came with: no sidecar of ours
    with pytest.raises(ConfigError, match=r"already carries YaRN \(factor 2 over 32768.*pass --force"):
        files.apply_yarn_file(config, YarnParams())
    assert state(config.parent) == {"config.json": shipped.encode()}
    files.apply_yarn_file(config, YarnParams(), force=True)
    files.apply_yarn_file(config, YarnParams(factor=3.0))  # our own patch: re-applying needs no --force
    files.remove_yarn_file(config)
    assert state(config.parent) == {"config.json": shipped.encode()}


def make_hf_cache(root: Path, text: str) -> tuple[Path, Path]:
    repo = root / "models--kakaocorp--kanana-like-8b"
    blob = repo / "blobs" / ("0" * 40)
    blob.parent.mkdir(parents=True)
    blob.write_text(text)
    snapshot = repo / "snapshots" / ("a" * 40)
    snapshot.mkdir(parents=True)
    (snapshot / "config.json").symlink_to(Path("..") / ".." / "blobs" / blob.name)
    return blob, snapshot / "config.json"


def test_read_only_blob_stays_reversible(tmp_path):
    blob, link = make_hf_cache(tmp_path / "hub", EXAMPLE.read_text())
    blob.chmod(0o444)
    target = os.readlink(link)
    files.apply_yarn_file(link, YarnParams())
    assert not link.is_symlink() and link.stat().st_mode & 0o200  # the patched copy is ours to change
    link.chmod(0o444)  # even made read-only afterwards, the restore only renames in the directory
    outcome = files.remove_yarn_file(link)
    assert outcome.restore_mode == "symlink" and link.is_symlink() and os.readlink(link) == target
    assert blob.read_text() == EXAMPLE.read_text() and sorted(p.name for p in link.parent.iterdir()) == ["config.json"]


def test_lock_file_is_gone_after_each_command_and_names_its_holder(config):
    files.apply_yarn_file(config, YarnParams())
    assert not lock_path(config).exists()
    with exclusive_lock(config):
        assert lock_path(config).read_text() == str(os.getpid())
        waited = []
        with pytest.raises(BadInput, match=rf"in use by process {os.getpid()}"):
            with exclusive_lock(config, timeout=0.2, on_wait=waited.append):
                pass
        assert waited == [os.getpid()]
    assert not lock_path(config).exists()


def cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "kanana_longctx", "config", *args]


def env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(REPO), "COLUMNS": "200"}


def test_a_second_process_waits_for_the_lock(config):
    """While this process holds the file's lock, a real `config --yarn` says whom it waits for and writes nothing;
    once released, it runs."""
    with exclusive_lock(config):
        proc = subprocess.Popen(cli(str(config), "--yarn"), env=env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        try:
            line = proc.stderr.readline().decode()
            assert line.startswith(f"waiting for process {os.getpid()}, which is changing {config}")
            held = {"config.json": EXAMPLE.read_bytes(), lock_path(config).name: str(os.getpid()).encode()}
            assert state(config.parent) == held
        except BaseException:
            proc.kill()
            raise
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err.decode()
    assert json.loads(config.read_text())["rope_scaling"]["factor"] == 4.4


WORKER = textwrap.dedent(
    """
    import sys, time
    from kanana_longctx.cli import app
    from kanana_longctx.yarn import files

    real_write = files.atomic_write_text

    def slow_write(*args, **kwargs):  # widen the window between reading the file and writing it
        time.sleep(0.004)
        return real_write(*args, **kwargs)

    files.atomic_write_text = slow_write
    path, factors = sys.argv[1], sys.argv[2].split(",")
    codes = []
    for i in range(int(sys.argv[3])):
        if i % 2 == 0:
            args = ["config", path, "--yarn", "--yarn-factor", factors[i % len(factors)]]
        else:
            args = ["config", path, "--no-yarn"]
        try:
            app(args, standalone_mode=False)
            codes.append(0)
        except SystemExit as exc:
            codes.append(exc.code)
    print("codes:", " ".join(map(str, codes)))
    """
)


def test_two_processes_patching_and_unpatching_one_file(config):
    original = config.read_bytes()
    workers = [
        subprocess.Popen(
            [sys.executable, "-c", WORKER, str(config), factors, "24"],
            env=env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        for factors in ("4.4,2.0,8.0", "3.0,4.4")
    ]
    for worker in workers:
        out, err = worker.communicate(timeout=300)
        assert worker.returncode == 0, err.decode()
        codes = [line for line in out.decode().splitlines() if line.startswith("codes:")]
        assert codes and set(codes[-1].split()[1:]) == {"0"}, out.decode() + err.decode()  # every command succeeded
    sidecar = files.backup_path(config)
    if sidecar.exists():  # file and backup agree: the record is of the file as it is, and of the true original
        record = files.read_backup(config)
        assert record.patched_sha256 == files.sha256(config.read_text())
        assert record.original_text.encode() == original
    else:
        assert config.read_bytes() == original
    files.remove_yarn_file(config)
    assert state(config.parent) == {"config.json": original}
