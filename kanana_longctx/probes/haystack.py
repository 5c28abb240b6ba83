"""Haystack sources: the built-in texts, the `noise` filler, a directory of .txt files or one file.

Usage: `hay = load_haystack("builtin", lang="ko"); hay.text, hay.sha256`

A haystack here is text; `kanana_longctx.probes.stream` turns it into the token stream of one tokenizer. Text is
read strictly as UTF-8 (a BOM is dropped, CRLF becomes LF, Hangul is NFC-normalised so that a file saved on macOS
tokenizes like the same text saved elsewhere). Files of a directory are taken in name order, never in the order the
file system lists them, so the same directory gives the same haystack on every machine.
"""

from __future__ import annotations

import hashlib
import unicodedata
from dataclasses import dataclass
from pathlib import Path

import kanana_longctx
from kanana_longctx.errors import HaystackError
from kanana_longctx.probes.languages import language_pack, noise_text

PARAGRAPH = "\n\n"  # joins files, and copies of a source that is too short


@dataclass(frozen=True)
class HaystackFile:
    name: str
    sha256: str
    chars: int


@dataclass(frozen=True)
class Haystack:
    name: str  # builtin:en | noise:ko | essays.txt | mydir/
    kind: str  # builtin | noise | dir | file
    text: str  # one copy of the source, normalised
    sha256: str  # of `text` as UTF-8: the content hash every probe records
    separator: str = PARAGRAPH  # joins copies when the source must be repeated
    files: tuple[HaystackFile, ...] = ()

    def repeated(self, copies: int) -> str:
        return self.separator.join([self.text] * max(1, copies))

    def to_dict(self) -> dict:
        return {
            "name": self.name,
            "kind": self.kind,
            "sha256": self.sha256,
            "chars": len(self.text),
            "files": [f.__dict__ for f in self.files],
        }


def sha256_text(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def builtin_root() -> Path:
    """`_haystacks` inside an installed wheel, else `haystacks/` of the source checkout."""
    package = Path(kanana_longctx.__file__).resolve().parent
    installed = package / "_haystacks"
    return installed if installed.is_dir() else package.parent / "haystacks"


def normalise(text: str) -> str:
    text = text.removeprefix("\ufeff").replace("\r\n", "\n").replace("\r", "\n")
    return unicodedata.normalize("NFC", text).strip()


def read_text_file(path: Path) -> str:
    """A file's text, normalised; HaystackError when it is missing, unreadable or not UTF-8."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise HaystackError(f"haystack file {path} does not exist") from None
    except OSError as exc:
        raise HaystackError(f"cannot read haystack file {path}: {exc.strerror or exc}") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise HaystackError(
            f"haystack file {path} is not UTF-8 text (byte 0x{raw[exc.start]:02x} at offset {exc.start})"
        ) from None
    return normalise(text)


def _from_files(paths: list[Path], name: str, kind: str) -> Haystack:
    texts, files = [], []
    for path in paths:
        text = read_text_file(path)
        if text:  # an empty file in a directory adds nothing (and no stray paragraph break)
            texts.append(text)
            files.append(HaystackFile(path.name, sha256_text(text), len(text)))
    joined = PARAGRAPH.join(texts)
    if not joined:
        raise HaystackError(f"haystack {name} is empty")
    return Haystack(name=name, kind=kind, text=joined, sha256=sha256_text(joined), files=tuple(files))


def txt_files(directory: Path) -> list[Path]:
    """The .txt files directly inside `directory`, sorted by name (code point order, locale-independent)."""
    found = [p for p in Path(directory).iterdir() if p.suffix == ".txt" and not p.name.startswith(".") and p.is_file()]
    return sorted(found, key=lambda p: p.name)


def load_builtin(lang: str, root: Path | None = None) -> Haystack:
    pack = language_pack(lang)
    directory = (Path(root) if root else builtin_root()) / pack.code
    files = txt_files(directory) if directory.is_dir() else []
    if not files:
        raise HaystackError(f"no built-in {pack.name} haystack (expected .txt files in {directory})")
    return _from_files(files, f"builtin:{pack.code}", "builtin")


def load_noise(lang: str) -> Haystack:
    pack = language_pack(lang)
    text = noise_text(pack.code)
    return Haystack(name=f"noise:{pack.code}", kind="noise", text=text, sha256=sha256_text(text), separator=" ")


def load_haystack(spec: str = "builtin", lang: str = "en", *, root: Path | None = None) -> Haystack:
    """Resolve `spec`: builtin[:LANG] | noise[:LANG] | a directory of .txt files | one text file.

    The keywords win over a file of the same name (write ./noise for such a file). LANG defaults to `lang`.
    """
    spec = (spec or "").strip()
    keyword, _, spec_lang = spec.partition(":")
    if keyword in ("builtin", "noise") and (spec_lang or ":" not in spec):
        chosen = spec_lang or lang
        return load_builtin(chosen, root) if keyword == "builtin" else load_noise(chosen)
    if not spec:
        raise HaystackError("empty haystack name (use builtin, noise, a directory or a file)")
    path = Path(spec).expanduser()
    if path.is_dir():
        files = txt_files(path)
        if not files:
            raise HaystackError(f"haystack directory {spec} holds no .txt files")
        return _from_files(files, f"{path.resolve().name}/", "dir")
    if path.is_file():
        return _from_files([path], path.name, "file")
    raise HaystackError(f"haystack '{spec}' not found (not builtin, noise, a directory or a file)")
