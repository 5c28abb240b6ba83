"""config.json on disk: find it, patch it atomically, keep what is needed to undo the patch, undo it.

Usage: outcome = apply_yarn_file(locate_config("org/name"), YarnParams()); remove_yarn_file(outcome.path)

Restore semantics. `--yarn` writes a sidecar `config.json.kanana-longctx.orig` (backup.py; JSON, written
atomically, before the config itself) holding the original text, the link target when config.json was an HF-cache
symlink, the hash of the text we wrote, the YaRN we wrote and the previous value text of every top-level key we
changed. `--no-yarn` first checks the sidecar (types, and its original text against its stored hash), then:
- puts the original back byte for byte (or re-creates the original symlink into the blob) when the file is still
  exactly what we wrote;
- otherwise, if the file still holds the YaRN the sidecar recorded, restores only the recorded RoPE keys and keeps
  the user's other edits; if it holds something else, says what it found and changes nothing;
- without a sidecar, removes YaRN blocks and keeps plain RoPE with the same theta.
Applying `--yarn` again (other parameters) keeps the first record, so `--no-yarn` always returns to the file as it
was before the first `--yarn`. YaRN that the file already carried without a sidecar of ours (the publisher's) is
replaced only with `--force`. A crash between the two writes leaves the original config and a sidecar whose
`original_text` equals it, which the next run recognises as stale. Every read-modify-write holds an OS-level lock
on the file (filelock.py), so concurrent `--yarn`/`--no-yarn` commands on one file run one after the other.
"""

from __future__ import annotations

import contextlib
import difflib
import os
import stat
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

from kanana_longctx.atomic import atomic_write_text, fsync_dir
from kanana_longctx.errors import ConfigError
from kanana_longctx.filelock import exclusive_lock
from kanana_longctx.hub import resolve_model
from kanana_longctx.yarn.backup import BackupRecord, backup_path, read_backup, record_text, sha256
from kanana_longctx.yarn.jsontext import load_object
from kanana_longctx.yarn.params import YarnParams
from kanana_longctx.yarn.patch import is_yarn_config, patch_text, restore_keys_text, strip_yarn_text

__all__ = [
    "BackupRecord",
    "FileOutcome",
    "apply_yarn_file",
    "backup_path",
    "locate_config",
    "read_backup",
    "read_config_dict",
    "read_config_text",
    "remove_yarn_file",
    "sha256",
]

OnWait = Callable[[int | None], None]


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


def _locked(path: Path, dry_run: bool, on_wait: OnWait | None):
    """The file's lock for a real write; nothing for a dry run (it writes nothing and reads one snapshot), nor in a
    directory we cannot write in (no command can change the file there; a write is refused by ensure_writable)."""
    if dry_run or not os.access(Path(path).parent, os.W_OK | os.X_OK):
        return contextlib.nullcontext()
    return exclusive_lock(path, on_wait=on_wait)


def _writable_mode(path: Path) -> int | None:
    """The mode for the regular file that replaces an HF-cache symlink: the blob's bits plus owner write, so that
    a read-only blob (0444) does not make the patched copy, and with it --no-yarn, read-only."""
    if not path.is_symlink():
        return None
    try:
        return (os.stat(path).st_mode & 0o777) | stat.S_IWUSR
    except OSError:
        return 0o644


def apply_yarn_file(
    path: Path,
    params: YarnParams,
    *,
    layer_types: Sequence[str] | None = None,
    max_position_embeddings: int | None = None,
    force: bool = False,
    dry_run: bool = False,
    on_wait: OnWait | None = None,
) -> FileOutcome:
    """Patch one config file (or, with dry_run, only compute the result). Writes the sidecar, then the config,
    holding the file's lock from the first read to the last write."""
    path = Path(path)
    with _locked(path, dry_run, on_wait):
        types = tuple(layer_types) if layer_types else None
        return _apply(path, params, types, max_position_embeddings, force, dry_run)


def _apply(path, params, layer_types, max_position_embeddings, force, dry_run) -> FileOutcome:
    text = read_config_text(path)
    load_object(text, str(path))
    record = read_backup(path)
    if record is not None and record.original_text is not None and text == record.original_text:
        record = None  # stale: a crash before the config was replaced, or the user restored it by hand
    ours = record is not None and sha256(text) == record.patched_sha256
    patch = patch_text(
        text,
        params,
        layer_types=layer_types,
        max_position_embeddings=max_position_embeddings,
        force=force,
        replace_yarn=force or ours,
        name=str(path),
    )
    notes = list(patch.notes)
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
        original_text = record.original_text if ours else None
        if original_text is None:
            notes.append("the file changed since the last --yarn: --no-yarn will restore only the RoPE keys")
    new_record = BackupRecord(
        original_sha256=original_sha,
        patched_sha256=sha256(patch.text),
        replaced=replaced,
        params=params.to_dict(),
        original_text=original_text,
        original_symlink=link,
        layer_types=layer_types,
    )
    outcome = FileOutcome(
        path, "yarn", text, patch.text, False, tuple(notes), backup_path(path), changed_keys=tuple(patch.replaced)
    )
    if dry_run:
        return outcome
    ensure_writable(path)
    atomic_write_text(backup_path(path), record_text(new_record), mode=0o644)
    # Replaces an HF-cache symlink by a regular file; the blob is untouched.
    atomic_write_text(path, patch.text, mode=_writable_mode(path))
    return FileOutcome(**{**outcome.__dict__, "written": True})


def remove_yarn_file(path: Path, *, dry_run: bool = False, on_wait: OnWait | None = None) -> FileOutcome:
    """Undo `apply_yarn_file` (see the module docstring for the cases), holding the file's lock."""
    path = Path(path)
    with _locked(path, dry_run, on_wait):
        return _remove(path, dry_run)


def _remove(path: Path, dry_run: bool) -> FileOutcome:
    text = read_config_text(path)
    config = load_object(text, str(path))
    record = read_backup(path)  # raises when the record cannot be trusted: nothing is changed then
    sidecar = backup_path(path)
    if record is not None and record.original_text is not None and text == record.original_text:
        # Stale sidecar: the file already is the original. Only the sidecar goes.
        if not dry_run:
            sidecar.unlink(missing_ok=True)
        return FileOutcome(path, "no-yarn", text, text, False, ("the file already is the original",), sidecar)
    if record is None:
        if not is_yarn_config(config):
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
        found = record.found_yarn(config)
        if found is not None:
            raise ConfigError(
                f"{path} no longer holds the YaRN its backup recorded ({record.yarn_params().summary()}): found "
                f"{found}; nothing changed (if the file was restored by hand, remove {sidecar})"
            )
        new_text = restore_keys_text(text, record.replaced, str(path))
        mode, notes = "keys", ["the file changed since --yarn: restored the RoPE keys and kept the other edits"]
    outcome = FileOutcome(path, "no-yarn", text, new_text, False, tuple(notes), sidecar if record else None, mode)
    if dry_run:
        return outcome
    if mode != "symlink":  # a symlink restore only renames in the directory: the patched file's mode is moot
        ensure_writable(path)
    elif not os.access(path.parent, os.W_OK | os.X_OK):
        raise ConfigError(f"cannot write in {path.parent}; nothing was written")
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
