"""Load a model's tokenizer (never its weights) from a resolved ModelSource.

Converting a GGUF's vocabulary to a transformers tokenizer takes several seconds, so the converted tokenizer is kept
in the user cache, `cache_dir()/tokenizers/<key>` (KANANA_LONGCTX_CACHE, else $XDG_CACHE_HOME/kanana-longctx, else
~/.cache/kanana-longctx; docs/running.md), keyed by the GGUF's path, size and mtime. The cache is only ever a
shortcut: a read-only one costs the conversion, a damaged entry is converted again and replaced.
"""

from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path

from kanana_longctx.errors import ModelNotFound
from kanana_longctx.hub import ModelSource, malformed_json


def cache_dir() -> Path:
    """This tool's user cache: KANANA_LONGCTX_CACHE when set, else the XDG cache directory's kanana-longctx."""
    env = os.environ.get("KANANA_LONGCTX_CACHE")
    if env:
        return Path(env).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg).expanduser() if xdg else Path.home() / ".cache") / "kanana-longctx"


def _gguf_cache_key(path: Path) -> str:
    st = path.stat()
    return hashlib.sha256(f"{path.resolve()}|{st.st_size}|{st.st_mtime_ns}".encode()).hexdigest()[:16]


def quiet_transformers() -> None:
    """transformers' warnings and progress bars would bury our one-line messages and rich progress."""
    import logging

    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    logging.getLogger("transformers").setLevel(logging.ERROR)


def _store(tok, cached: Path) -> None:
    """Save a converted tokenizer to the cache atomically (a private directory renamed into place); a read-only or
    full cache only costs time, and leaves no half-written directory behind."""
    tmp = cached.with_name(cached.name + f".tmp{os.getpid()}")
    try:
        tok.save_pretrained(tmp)
        os.replace(tmp, cached)
    except OSError:
        shutil.rmtree(tmp, ignore_errors=True)


def load_tokenizer(source: ModelSource, *, trust_remote_code: bool = False):
    """Return a transformers tokenizer for `source`; raise ModelNotFound with one clear line when it cannot load."""
    from transformers import AutoTokenizer

    quiet_transformers()
    try:
        if source.gguf_file:
            gguf = source.directory / source.gguf_file
            cached = cache_dir() / "tokenizers" / _gguf_cache_key(gguf)
            if (cached / "tokenizer_config.json").is_file():
                try:
                    return AutoTokenizer.from_pretrained(cached)
                except Exception:  # a damaged entry (a disk filled up, an edit): convert again below
                    shutil.rmtree(cached, ignore_errors=True)
            tok = AutoTokenizer.from_pretrained(source.directory, gguf_file=source.gguf_file)
            _store(tok, cached)
            return tok
        return AutoTokenizer.from_pretrained(source.directory, trust_remote_code=trust_remote_code)
    except ModelNotFound:
        raise
    except Exception as exc:  # transformers raises OSError/ValueError/KeyError... for a missing or broken tokenizer
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        if not source.gguf_file:  # transformers does not say where a model's JSON file breaks
            first = malformed_json(source.directory) or first
        if first.rstrip().endswith(":"):  # transformers lists the files it looked for on the following lines
            first = "no tokenizer files (tokenizer.json, tokenizer.model, vocab files) found"
        raise ModelNotFound(f"cannot load a tokenizer from {source.spec}: {first}") from exc
