"""config.json on disk: find it, patch it atomically, keep what is needed to undo the patch, undo it.

Usage: outcome = apply_yarn_file(locate_config("org/name"), YarnParams()); remove_yarn_file(outcome.path)

Restore semantics. `--yarn` writes a sidecar `config.json.kanana-longctx.orig` (JSON, written atomically, before
the config itself) holding the original text, the link target when config.json was an HF-cache symlink, the
hash of the text we wrote, and the previous value text of every top-level key we changed. `--no-yarn` then:
- puts the original back byte for byte (or re-creates the original symlink into the blob) when the file is still
  exactly what we wrote;
- otherwise restores only the recorded RoPE keys and keeps the user's other edits;
- without a sidecar, removes YaRN blocks and keeps plain RoPE with the same theta.
Applying `--yarn` again (other parameters) keeps the first record, so `--no-yarn` always returns to the file as it
was before the first `--yarn`. A crash between the two writes leaves the original config and a sidecar whose
`original_text` equals it, which the next run recognises as stale.
"""

from __future__ import annotations

import difflib
import hashlib
import json
import os
import stat
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from kanana_longctx.atomic import atomic_write_text, fsync_dir
from kanana_longctx.errors import ConfigError
from kanana_longctx.hub import resolve_model
from kanana_longctx.yarn.jsontext import load_object
from kanana_longctx.yarn.params import YarnParams
from kanana_longctx.yarn.patch import is_yarn_config, patch_text, restore_keys_text, strip_yarn_text

BACKUP_SUFFIX = ".kanana-longctx.orig"
BACKUP_FORMAT = 1


def sha256(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def backup_path(config_path: Path) -> Path:
    return config_path.with_name(config_path.name + BACKUP_SUFFIX)


def locate_config(spec: str, revision: str | None = None) -> Path:
    """MODEL as typed -> the config file: a file path as is, `DIR/config.json`, or the hub snapshot's config.json."""
    path = Path(spec).expanduser()
    if path.is_file():
        return path
    if path.is_dir():
        config = path / "config.json"
        if not config.is_file():
            raise ConfigError(f"{spec}: no config.json in this directory")
        return config
    source = resolve_model(spec, revision)  # raises ModelNotFound (exit 2) for anything else
    if not source.config_path.is_file():
        raise ConfigError(f"{spec}: no config.json in {source.directory}")
    return source.config_path


def read_config_text(path: Path) -> str:
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror or exc}") from None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise ConfigError(f"{path} is not UTF-8 text") from None


def read_config_dict(path: Path) -> dict:
    return load_object(read_config_text(path), str(path))


@dataclass(frozen=True)
class BackupRecord:
    """The sidecar's content: everything `--no-yarn` needs."""

    original_sha256: str
    patched_sha256: str
    replaced: dict[str, str | None]
    params: dict
    original_text: str | None = None  # None once later edits made a byte-identical restore impossible
    original_symlink: str | None = None  # the link target when config.json was a symlink (HF cache)
    tool: str = "kanana-longctx"
    format: int = BACKUP_FORMAT

    def to_dict(self) -> dict:
        return {
            "tool": self.tool,
            "format": self.format,
            "params": dict(self.params),
            "original_sha256": self.original_sha256,
            "patched_sha256": self.patched_sha256,
            "original_symlink": self.original_symlink,
            "replaced": dict(self.replaced),
            "original_text": self.original_text,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "BackupRecord":
        known = set(cls.__dataclass_fields__)
        return cls(**{k: v for k, v in data.items() if k in known})


def read_backup(config_path: Path) -> BackupRecord | None:
    path = backup_path(config_path)
    if not path.exists():
        return None
    try:
        record = BackupRecord.from_dict(json.loads(path.read_text(encoding="utf-8")))
    except (OSError, ValueError, TypeError) as exc:
        raise ConfigError(f"the backup record {path} is unreadable ({exc}); move it away and retry") from None
    if record.tool != "kanana-longctx" or record.format != BACKUP_FORMAT:
        raise ConfigError(f"{path} is not a kanana-longctx backup record (format {record.format})")
    return record


@dataclass(frozen=True)
class FileOutcome:
    """What happened (or, on a dry run, would happen) to one config file."""

    path: Path
    action: str  # "yarn" | "no-yarn"
    old_text: str
    new_text: str
    written: bool
    notes: tuple[str, ...] = ()
    backup: Path | None = None
    restore_mode: str | None = None  # "bytes" | "symlink" | "keys" | "strip" for --no-yarn
    changed_keys: tuple[str, ...] = field(default_factory=tuple)

    @property
    def changed(self) -> bool:
        return self.old_text != self.new_text or self.restore_mode == "symlink"

    def diff(self) -> str:
        return unified_diff(self.old_text, self.new_text, self.path.name)


def unified_diff(old: str, new: str, name: str) -> str:
    def lines(text: str) -> list[str]:
        out = text.splitlines(keepends=True)
        if out and not out[-1].endswith("\n"):
            out[-1] += "\n\\ No newline at end of file\n"
        return out

    return "".join(difflib.unified_diff(lines(old), lines(new), fromfile=f"a/{name}", tofile=f"b/{name}"))


def ensure_writable(path: Path) -> None:
    """Refuse before writing anything: a read-only config (even for root: chmod a-w is the user's intent) or a
    directory where the temporary file cannot be created."""
    directory = path.parent
    if not path.is_symlink():
        mode = path.stat().st_mode
        if not mode & (stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH) or not os.access(path, os.W_OK):
            raise ConfigError(f"{path} is read-only; nothing was written")
    if not os.access(directory, os.W_OK | os.X_OK):
        raise ConfigError(f"cannot write in {directory}; nothing was written")


def _atomic_symlink(path: Path, target: str) -> None:
    """Replace `path` by a symlink to `target`, atomically (a reader sees the file or the link, nothing else)."""
    tmp = Path(tempfile.mktemp(prefix=f".{path.name}.", suffix=".lnk", dir=path.parent))
    os.symlink(target, tmp)
    try:
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


def apply_yarn_file(
    path: Path,
    params: YarnParams,
    *,
    max_position_embeddings: int | None = None,
    force: bool = False,
    dry_run: bool = False,
) -> FileOutcome:
    """Patch one config file (or, with dry_run, only compute the result). Writes the sidecar, then the config."""
    path = Path(path)
    text = read_config_text(path)
    patch = patch_text(text, params, max_position_embeddings=max_position_embeddings, force=force, name=str(path))
    record = read_backup(path)
    notes = list(patch.notes)
    if record is not None and record.original_text is not None and text == record.original_text:
        record = None  # stale: a crash before the config was replaced, or the user restored it by hand
    if not patch.changed:
        return FileOutcome(path, "yarn", text, text, False, tuple(notes), backup_path(path) if record else None)
    if record is None:
        link = os.readlink(path) if path.is_symlink() else None
        replaced = dict(patch.replaced)
        original_text, original_sha = text, sha256(text)
    else:
        link = record.original_symlink
        # The first record's values are the real originals; keys touched for the first time now are added.
        replaced = {**patch.replaced, **record.replaced}
        original_sha = record.original_sha256
        original_text = record.original_text if sha256(text) == record.patched_sha256 else None
        if original_text is None:
            notes.append("the file changed since the last --yarn: --no-yarn will restore only the RoPE keys")
    new_record = BackupRecord(
        original_sha256=original_sha,
        patched_sha256=sha256(patch.text),
        replaced=replaced,
        params=params.to_dict(),
        original_text=original_text,
        original_symlink=link,
    )
    outcome = FileOutcome(
        path, "yarn", text, patch.text, False, tuple(notes), backup_path(path), changed_keys=tuple(patch.replaced)
    )
    if dry_run:
        return outcome
    ensure_writable(path)
    atomic_write_text(backup_path(path), json.dumps(new_record.to_dict(), indent=2) + "\n", mode=0o644)
    atomic_write_text(path, patch.text)  # replaces an HF-cache symlink by a regular file; the blob is untouched
    return FileOutcome(**{**outcome.__dict__, "written": True})


def remove_yarn_file(path: Path, *, dry_run: bool = False) -> FileOutcome:
    """Undo `apply_yarn_file` (see the module docstring for the three cases)."""
    path = Path(path)
    text = read_config_text(path)
    load_object(text, str(path))
    record = read_backup(path)
    sidecar = backup_path(path)
    if record is not None and record.original_text is not None and text == record.original_text:
        # Stale sidecar: the file already is the original. Only the sidecar goes.
        if not dry_run:
            sidecar.unlink(missing_ok=True)
        return FileOutcome(path, "no-yarn", text, text, False, ("the file already is the original",), sidecar)
    if record is None:
        if not is_yarn_config(load_object(text)):
            return FileOutcome(path, "no-yarn", text, text, False, ("the file has no YaRN; nothing to remove",))
        strip = strip_yarn_text(text, str(path))
        mode, new_text, notes = "strip", strip.text, list(strip.notes)
    elif record.original_text is not None and sha256(text) == record.patched_sha256:
        mode, new_text, notes = "bytes", record.original_text, ["restored the original file byte for byte"]
        target = record.original_symlink
        if target is not None and _link_target_holds(path, target, record.original_text):
            mode = "symlink"
            notes = [f"restored the original symlink to {target}"]
    else:
        new_text = restore_keys_text(text, record.replaced, str(path))
        mode, notes = "keys", ["the file changed since --yarn: restored the RoPE keys and kept the other edits"]
    outcome = FileOutcome(path, "no-yarn", text, new_text, False, tuple(notes), sidecar if record else None, mode)
    if dry_run:
        return outcome
    ensure_writable(path)
    if mode == "symlink":
        _atomic_symlink(path, record.original_symlink)  # type: ignore[union-attr, arg-type]
    else:
        atomic_write_text(path, new_text)
    if record is not None:
        sidecar.unlink(missing_ok=True)
        fsync_dir(path.parent)
    return FileOutcome(**{**outcome.__dict__, "written": True})


def _link_target_holds(path: Path, target: str, text: str) -> bool:
    """True when the recorded link target still exists and holds exactly the original text (an intact blob)."""
    resolved = Path(target) if os.path.isabs(target) else path.parent / target
    try:
        return resolved.read_bytes() == text.encode("utf-8")
    except OSError:
        return False
