"""Start a real server on a free port of 127.0.0.1, wait until it answers, stop it by its own process id.

Usage: `with llama_server(build, gguf, log_dir, context=4096) as server: server.url`  (also `llama_cpp_python`)

Every server runs on the CPU with at most two threads (the machines this runs on have two cores). Stopping only
ever signals the process this module started: SIGTERM, a wait, SIGKILL if it is still there.
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import httpx2

from servers.build import ServerBuild

START_TIMEOUT_S = 120.0


@dataclass
class RunningServer:
    kind: str  # llama-server | llama_cpp.server
    process: subprocess.Popen
    port: int
    log_path: Path
    context: int

    @property
    def root(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        return self.root + "/v1"

    @property
    def pid(self) -> int:
        return self.process.pid

    def log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def kill(self) -> None:
        """SIGKILL, the way a crashed or OOM-killed server goes."""
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=30)

    def stop(self, grace_s: float = 15.0) -> None:
        if self.process.poll() is not None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout=grace_s)
        except subprocess.TimeoutExpired:
            self.kill()


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def threads() -> int:
    return max(1, min(2, os.cpu_count() or 1))


@contextlib.contextmanager
def llama_server(build: ServerBuild, gguf: Path, log_dir: Path, *, context: int = 4096, slots: int = 1,
                 extra: tuple[str, ...] = ()):
    port = free_port()
    command = [
        str(build.llama_server), "-m", str(gguf), "--host", "127.0.0.1", "--port", str(port),
        "-c", str(context * slots), "-np", str(slots), "-t", str(threads()), "--no-webui", *extra,
    ]
    with _started("llama-server", command, port, log_dir, context, {}) as server:
        yield server


@contextlib.contextmanager
def llama_cpp_python(build: ServerBuild, gguf: Path, log_dir: Path, *, context: int = 4096,
                     extra: tuple[str, ...] = ()):
    port = free_port()
    command = [
        sys.executable, "-m", "llama_cpp.server", "--model", str(gguf), "--host", "127.0.0.1", "--port", str(port),
        "--n_ctx", str(context), "--n_threads", str(threads()), "--n_threads_batch", str(threads()),
        "--logits_all", "false", *extra,
    ]
    path = os.pathsep.join(p for p in (str(build.python_dir), os.environ.get("PYTHONPATH", "")) if p)
    env = {"PYTHONPATH": path, "LLAMA_CPP_LIB_PATH": str(build.lib_dir)}
    with _started("llama_cpp.server", command, port, log_dir, context, env) as server:
        yield server


@contextlib.contextmanager
def _started(kind: str, command: list[str], port: int, log_dir: Path, context: int, env: dict):
    log_dir.mkdir(parents=True, exist_ok=True)
    log_path = log_dir / f"{kind}-{port}.log"
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            command, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            env={**os.environ, **env, "NO_PROXY": "127.0.0.1"},
        )
    server = RunningServer(kind, process, port, log_path, context)
    try:
        _wait_ready(server)
        yield server
    finally:
        server.stop()


def _wait_ready(server: RunningServer) -> None:
    """Until the server answers /v1/models (llama-server answers 503 while it loads the model)."""
    deadline = time.monotonic() + START_TIMEOUT_S
    with httpx2.Client(timeout=5.0, trust_env=False) as client:
        while time.monotonic() < deadline:
            if server.process.poll() is not None:
                raise RuntimeError(f"{server.kind} exited with {server.process.returncode}:\n{server.log_tail()}")
            try:
                if client.get(server.url + "/models").status_code == 200:
                    return
            except httpx2.TransportError:
                pass
            time.sleep(0.25)
    raise RuntimeError(f"{server.kind} did not answer within {START_TIMEOUT_S:g} s:\n{server.log_tail()}")
