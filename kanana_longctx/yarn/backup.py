"""The backup sidecar `config.json.kanana-longctx.orig`: what `--no-yarn` needs, checked before it is trusted.

Usage: record = read_backup(config_path); record.holds_recorded_yarn(current_config) if record else ...

The record is JSON: the original text and its SHA-256, the SHA-256 of the text we wrote, the previous value text of
every top-level key we changed, the YaRN parameters and layer types we wrote, and the original symlink target when
config.json was an HF-cache link. Reading it checks every field's type and that the stored original text still
hashes to the stored hash; a record that fails is refused with one line (ConfigError), never half-used.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

from kanana_longctx.errors import BadInput, ConfigError, one_line
from kanana_longctx.yarn.jsontext import load_json
from kanana_longctx.yarn.params import RopeSettings, YarnParams, nested_rope_keys

BACKUP_SUFFIX = ".kanana-longctx.orig"
BACKUP_FORMAT = 1
TOOL = "kanana-longctx"


def sha256(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def backup_path(config_path: Path) -> Path:
    return config_path.with_name(config_path.name + BACKUP_SUFFIX)


def _is_hash(value: Any) -> bool:
    return isinstance(value, str) and len(value) == 64 and all(c in "0123456789abcdef" for c in value)


@dataclass(frozen=True)
class BackupRecord:
    """The sidecar's content: everything `--no-yarn` needs."""

    original_sha256: str
    patched_sha256: str
    replaced: dict[str, str | None]
    params: dict
    original_text: str | None = None  # None once later edits made a byte-identical restore impossible
    original_symlink: str | None = None  # the link target when config.json was a symlink (HF cache)
    layer_types: tuple[str, ...] | None = None  # the per-layer-type blocks we patched; None: the one RoPE block
    tool: str = TOOL
    format: int = BACKUP_FORMAT

    def to_dict(self) -> dict:
        return {
            "tool": self.tool,
            "format": self.format,
            "params": dict(self.params),
            "layer_types": None if self.layer_types is None else list(self.layer_types),
            "original_sha256": self.original_sha256,
            "patched_sha256": self.patched_sha256,
            "original_symlink": self.original_symlink,
            "replaced": dict(self.replaced),
            "original_text": self.original_text,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "BackupRecord":
        """Build from parsed JSON, checking every field (ValueError with what is wrong)."""
        if not isinstance(data, Mapping):
            raise ValueError(f"it holds a JSON {type(data).__name__}, not an object")
        if data.get("tool") != TOOL or data.get("format") != BACKUP_FORMAT:
            raise ValueError(f"not a {TOOL} backup record of format {BACKUP_FORMAT}")
        for key in ("original_sha256", "patched_sha256"):
            if not _is_hash(data.get(key)):
                raise ValueError(f"'{key}' is not a SHA-256 hex digest")
        replaced = data.get("replaced")
        if not isinstance(replaced, dict) or not all(
            isinstance(k, str) and (v is None or isinstance(v, str)) for k, v in replaced.items()
        ):
            raise ValueError("'replaced' must map key names to JSON text or null")
        if not isinstance(data.get("params"), dict):
            raise ValueError("'params' must be an object")
        for key in ("original_text", "original_symlink"):
            if data.get(key) is not None and not isinstance(data[key], str):
                raise ValueError(f"'{key}' must be a string or null")
        types = data.get("layer_types")
        if types is not None and not (isinstance(types, list) and types and all(isinstance(t, str) for t in types)):
            raise ValueError("'layer_types' must be a list of names or null")
        return cls(
            original_sha256=data["original_sha256"],
            patched_sha256=data["patched_sha256"],
            replaced=dict(replaced),
            params=dict(data["params"]),
            original_text=data.get("original_text"),
            original_symlink=data.get("original_symlink"),
            layer_types=None if types is None else tuple(types),
        )

    def yarn_params(self) -> YarnParams:
        return YarnParams.from_dict(self.params)

    def found_yarn(self, config: Mapping[str, Any]) -> str | None:
        """None when `config` still holds the YaRN this record wrote (in the blocks it wrote); otherwise what it
        holds there instead, in words."""
        recorded = self.yarn_params()
        for layer_type in self.layer_types or (None,):
            if layer_type is not None and layer_type not in nested_rope_keys(config):
                return f"no per-layer-type block for {layer_type}"
            try:
                settings = RopeSettings.from_config(config, layer_type)
            except BadInput as exc:
                return str(exc)
            where = f" in {settings.source_key}" if settings.source_key else ""
            if not settings.is_yarn:
                return f"rope type '{settings.rope_type}'{where}"
            current = settings.yarn_params()
            if current != recorded:
                return f"other YaRN{where} ({current.summary() if current else 'invalid'})"
        return None


def read_backup(config_path: Path) -> BackupRecord | None:
    """The sidecar beside `config_path`, checked (None when there is none). ConfigError when it cannot be trusted:
    unreadable, malformed, of another tool, or its original text no longer hashing to its stored hash."""
    path = backup_path(config_path)
    if not path.exists():
        return None
    try:
        text = path.read_bytes().decode("utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"the backup record {path} is unreadable ({one_line(exc)}); move it away and retry") from None
    data = load_json(text, str(path))
    try:
        record = BackupRecord.from_dict(data)
        record.yarn_params()
    except (ValueError, BadInput) as exc:
        raise ConfigError(f"the backup record {path} is not usable: {exc}; nothing changed") from None
    if record.original_text is not None and sha256(record.original_text) != record.original_sha256:
        raise ConfigError(
            f"the backup record {path} does not match its own hash (edited or corrupted); nothing changed"
        )
    return record


def record_text(record: BackupRecord) -> str:
    return json.dumps(record.to_dict(), indent=2) + "\n"
