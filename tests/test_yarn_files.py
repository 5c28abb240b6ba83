"""config.json on disk: atomic writes, the backup sidecar, restores, crashes, and the HF-cache symlink layout."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from kanana_longctx import atomic
from kanana_longctx.errors import ConfigError
from kanana_longctx.yarn import files
from kanana_longctx.yarn.params import YarnParams

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "kanana-like-8b-config.json"


@pytest.fixture
def config(tmp_path) -> Path:
    path = tmp_path / "model" / "config.json"
    path.parent.mkdir()
    shutil.copyfile(EXAMPLE, path)
    return path


def listing(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir())


def test_round_trip_is_byte_identical(config):
    original = config.read_bytes()
    outcome = files.apply_yarn_file(config, YarnParams())
    assert outcome.written and outcome.changed
    assert json.loads(config.read_text())["rope_scaling"]["factor"] == 4.4
    record = files.read_backup(config)
    assert record.original_text.encode() == original
    assert record.patched_sha256 == files.sha256(config.read_text())
    assert set(record.replaced) == {"rope_scaling", "rope_parameters"}
    assert listing(config.parent) == ["config.json", "config.json.kanana-longctx.orig"]
    back = files.remove_yarn_file(config)
    assert back.restore_mode == "bytes"
    assert config.read_bytes() == original
    assert listing(config.parent) == ["config.json"]


def test_dry_run_writes_nothing(config):
    original = config.read_bytes()
    outcome = files.apply_yarn_file(config, YarnParams(), dry_run=True)
    assert not outcome.written and outcome.changed
    assert '+  "rope_scaling": {' in outcome.diff() and '-  "rope_scaling": null,' in outcome.diff()
    assert config.read_bytes() == original and listing(config.parent) == ["config.json"]


def test_second_apply_changes_nothing(config):
    files.apply_yarn_file(config, YarnParams())
    once, sidecar = config.read_bytes(), files.backup_path(config).read_bytes()
    outcome = files.apply_yarn_file(config, YarnParams())
    assert not outcome.changed and not outcome.written
    assert config.read_bytes() == once and files.backup_path(config).read_bytes() == sidecar


def test_reapply_other_params_still_restores_the_first_original(config):
    original = config.read_bytes()
    files.apply_yarn_file(config, YarnParams(factor=2.0))
    files.apply_yarn_file(config, YarnParams(), max_position_embeddings=144179)
    assert json.loads(config.read_text())["max_position_embeddings"] == 144179
    files.remove_yarn_file(config)
    assert config.read_bytes() == original


def test_edit_after_patch_keeps_the_edit(config):
    files.apply_yarn_file(config, YarnParams())
    edited = config.read_text().replace('"use_cache": true', '"use_cache": false')
    config.write_text(edited)
    outcome = files.remove_yarn_file(config)
    assert outcome.restore_mode == "keys"
    after = json.loads(config.read_text())
    assert after["use_cache"] is False and after["rope_scaling"] is None and "rope_parameters" not in after
    assert config.read_text() == EXAMPLE.read_text().replace('"use_cache": true', '"use_cache": false')


def test_no_yarn_without_record_strips(config):
    patched = files.apply_yarn_file(config, YarnParams(), dry_run=True).new_text
    config.write_text(patched)
    outcome = files.remove_yarn_file(config)
    assert outcome.restore_mode == "strip"
    after = json.loads(config.read_text())
    assert "rope_scaling" not in after and after["rope_theta"] == 500000.0
    assert not files.remove_yarn_file(config).changed


def test_crash_while_replacing_config_leaves_original(config, monkeypatch):
    original = config.read_bytes()
    real_replace = os.replace

    def crash_on_config(src, dst):
        if Path(dst) == config:
            raise OSError("simulated crash")
        return real_replace(src, dst)

    monkeypatch.setattr(atomic.os, "replace", crash_on_config)
    with pytest.raises(OSError, match="simulated crash"):
        files.apply_yarn_file(config, YarnParams())
    assert config.read_bytes() == original
    assert listing(config.parent) == ["config.json", "config.json.kanana-longctx.orig"]  # no temp file left
    monkeypatch.setattr(atomic.os, "replace", real_replace)
    # The stale sidecar is recognised: removing is a no-op, applying works and still restores byte for byte.
    assert not files.remove_yarn_file(config).changed and listing(config.parent) == ["config.json"]
    files.apply_yarn_file(config, YarnParams())
    files.remove_yarn_file(config)
    assert config.read_bytes() == original


@pytest.mark.parametrize("crash_at,left", [(1, []), (3, ["config.json.kanana-longctx.orig"])])
def test_crash_while_writing_temp_file(config, monkeypatch, crash_at, left):
    """fsync calls: 1 sidecar temp file, 2 its directory, 3 the config's temp file."""
    original = config.read_bytes()
    calls = []
    real_fsync = os.fsync

    def crash(fd):
        calls.append(fd)
        if len(calls) == crash_at:
            raise KeyboardInterrupt  # like Ctrl-C in the middle of the write
        return real_fsync(fd)

    monkeypatch.setattr(atomic.os, "fsync", crash)
    with pytest.raises(KeyboardInterrupt):
        files.apply_yarn_file(config, YarnParams())
    assert config.read_bytes() == original
    assert listing(config.parent) == sorted(["config.json", *left])


def test_read_only_file_is_refused(config):
    original = config.read_bytes()
    config.chmod(0o444)
    with pytest.raises(ConfigError, match="read-only"):
        files.apply_yarn_file(config, YarnParams())
    assert config.read_bytes() == original and listing(config.parent) == ["config.json"]


def make_hf_cache(root: Path, text: str, repo: str = "kakaocorp/kanana-like-8b") -> tuple[Path, Path, Path]:
    """models--org--name/{blobs/<sha>, snapshots/<c1|c2>/config.json -> ../../blobs/<sha>, refs/main}."""
    repo_dir = root / ("models--" + repo.replace("/", "--"))
    blob = repo_dir / "blobs" / ("0" * 40)
    blob.parent.mkdir(parents=True)
    blob.write_text(text)
    snapshots = []
    for commit in ("a" * 40, "b" * 40):
        snap = repo_dir / "snapshots" / commit
        snap.mkdir(parents=True)
        (snap / "config.json").symlink_to(Path("..") / ".." / "blobs" / blob.name)
        snapshots.append(snap)
    (repo_dir / "refs").mkdir()
    (repo_dir / "refs" / "main").write_text("a" * 40)
    return blob, snapshots[0] / "config.json", snapshots[1] / "config.json"


def test_hf_cache_symlink_is_replaced_then_restored(tmp_path):
    text = EXAMPLE.read_text()
    blob, link, other = make_hf_cache(tmp_path / "hub", text)
    target = os.readlink(link)
    files.apply_yarn_file(link, YarnParams())
    assert not link.is_symlink() and json.loads(link.read_text())["rope_scaling"]["type"] == "yarn"
    assert blob.read_text() == text and other.is_symlink() and other.read_text() == text
    assert files.read_backup(link).original_symlink == target
    outcome = files.remove_yarn_file(link)
    assert outcome.restore_mode == "symlink"
    assert link.is_symlink() and os.readlink(link) == target and blob.read_text() == text
    assert listing(link.parent) == ["config.json"]
