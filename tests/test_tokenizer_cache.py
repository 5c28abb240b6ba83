"""The converted-tokenizer cache: where it lives (KANANA_LONGCTX_CACHE, else $XDG_CACHE_HOME/kanana-longctx, else
~/.cache/kanana-longctx), that a real SmolLM2 conversion lands where the variables say and is used from there, and
that a damaged entry is converted again instead of failing every later run."""

from __future__ import annotations

from pathlib import Path

from kanana_longctx.tokenizer import _gguf_cache_key, cache_dir, load_tokenizer


def test_the_variables_move_the_cache(monkeypatch, tmp_path):
    monkeypatch.setenv("KANANA_LONGCTX_CACHE", str(tmp_path / "mine"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache_dir() == tmp_path / "mine"
    monkeypatch.delenv("KANANA_LONGCTX_CACHE")
    assert cache_dir() == tmp_path / "xdg" / "kanana-longctx"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert cache_dir() == tmp_path / "home" / ".cache" / "kanana-longctx"
    monkeypatch.setenv("KANANA_LONGCTX_CACHE", "~/elsewhere")
    assert cache_dir() == tmp_path / "home" / "elsewhere"


def _entry(root: Path, source) -> Path:
    return root / "tokenizers" / _gguf_cache_key(source.directory / source.gguf_file)


def test_the_session_cache_holds_the_conversion(smollm2_tokenizer, smollm2_source, session_cache):
    """conftest points KANANA_LONGCTX_CACHE at a session directory: the conversion went there, not to ~/.cache."""
    assert (_entry(session_cache, smollm2_source) / "tokenizer_config.json").is_file()


def test_a_conversion_lands_under_xdg_and_is_used_from_there(monkeypatch, tmp_path, smollm2_source, smollm2_tokenizer):
    monkeypatch.delenv("KANANA_LONGCTX_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    text = "The special magic number is 1234567. 특별한 숫자"
    tok = load_tokenizer(smollm2_source)
    entry = _entry(tmp_path / "xdg" / "kanana-longctx", smollm2_source)
    assert (entry / "tokenizer.json").is_file() and not list(entry.parent.glob("*.tmp*"))
    assert tok(text)["input_ids"] == smollm2_tokenizer(text)["input_ids"]

    (entry / "tokenizer.json").write_text("{ damaged", encoding="utf-8")  # a disk that filled up mid-write
    again = load_tokenizer(smollm2_source)
    assert again(text)["input_ids"] == smollm2_tokenizer(text)["input_ids"]
    assert (entry / "tokenizer.json").read_text(encoding="utf-8") != "{ damaged"  # converted and stored again
