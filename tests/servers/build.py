"""Build the real servers the endpoint tests talk to, once, into a cache shared by test runs.

Usage: `build = ensure_build()` (a ServerBuild: `llama_server`, `lib_dir`, `python_dir`), or `missing_tools()`.

One cmake build of the llama.cpp source that PyPI's llama-cpp-python sdist vendors gives both servers: the
`llama-server` target (llama.cpp's own server), and the shared libllama/libggml that llama-cpp-python's Python
package loads from LLAMA_CPP_LIB_PATH. The Python package itself is built by pip from the same sdist with
`-DLLAMA_BUILD=OFF` (no second compile of llama.cpp) and installed with --target into the cache; the server's
Python dependencies come from the test extra. The cache directory is keyed by the llama-cpp-python version and
the cmake flags, filled under a file lock (two pytest processes never build at once), and only appears complete
(renamed into place) once everything is built, so an interrupted build is redone from scratch next time.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import tarfile
import time
from dataclasses import dataclass
from pathlib import Path

from filelock import FileLock

LLAMA_CPP_PYTHON_VERSION = "0.3.36"
CACHE_ENV = "KANANA_LONGCTX_TEST_SERVERS"  # where builds are kept (default: ~/.cache/kanana-longctx-test-servers)
JOBS_ENV = "KANANA_LONGCTX_BUILD_JOBS"  # parallel compile jobs (default 2)
# Portable CPU code (AVX2 class, not -march=native: the cache may move between machines), shared libraries for
# llama-cpp-python, only what llama-server needs: no tests, examples, web UI (its prebuilt download included),
# OpenSSL. RPATH $ORIGIN: the binary and its libraries stay together in one directory.
CMAKE_FLAGS = (
    "-DCMAKE_BUILD_TYPE=Release",
    "-DBUILD_SHARED_LIBS=ON",
    "-DGGML_NATIVE=OFF",
    "-DGGML_CCACHE=OFF",
    "-DLLAMA_BUILD_TESTS=OFF",
    "-DLLAMA_BUILD_EXAMPLES=OFF",
    "-DLLAMA_BUILD_TOOLS=ON",
    "-DLLAMA_BUILD_SERVER=ON",
    "-DLLAMA_BUILD_APP=OFF",
    "-DLLAMA_BUILD_UI=OFF",
    "-DLLAMA_USE_PREBUILT_UI=OFF",
    "-DLLAMA_OPENSSL=OFF",
    "-DLLAMA_TOOLS_INSTALL=OFF",
    "-DCMAKE_BUILD_WITH_INSTALL_RPATH=ON",
    "-DCMAKE_INSTALL_RPATH=$ORIGIN",
)
TARGETS = ("llama-server", "llama")
MIN_CMAKE = (3, 21)  # llama-cpp-python's CMakeLists (llama.cpp itself needs 3.14)


class BuildFailed(RuntimeError):
    """A build step failed; the message names the step and where its log is."""


@dataclass(frozen=True)
class ServerBuild:
    root: Path
    info: dict

    @property
    def llama_server(self) -> Path:
        return self.root / "bin" / "llama-server"

    @property
    def lib_dir(self) -> Path:
        return self.root / "bin"

    @property
    def python_dir(self) -> Path:
        return self.root / "py"


def cache_root() -> Path:
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV]).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg).expanduser() if xdg else Path.home() / ".cache") / "kanana-longctx-test-servers"


def build_key() -> str:
    flags = hashlib.sha256("\n".join(CMAKE_FLAGS + TARGETS).encode()).hexdigest()[:10]
    return f"llama-cpp-python-{LLAMA_CPP_PYTHON_VERSION}-{flags}"


def missing_tools() -> str | None:
    """Why the servers cannot be built here (None when they can)."""
    cmake = shutil.which("cmake")
    if cmake is None:
        return "cmake is not installed"
    version = _cmake_version(cmake)
    if version < MIN_CMAKE:
        return f"cmake {'.'.join(map(str, version))} is older than {'.'.join(map(str, MIN_CMAKE))}"
    if not any(shutil.which(c) for c in ("c++", "g++", "clang++")):
        return "no C++ compiler (c++, g++ or clang++) is installed"
    if not any(shutil.which(c) for c in ("cc", "gcc", "clang")):
        return "no C compiler (cc, gcc or clang) is installed"
    if not any(shutil.which(m) for m in ("make", "ninja")):
        return "neither make nor ninja is installed"
    return None


def find_build() -> ServerBuild | None:
    root = cache_root() / build_key()
    marker = root / "BUILD.json"
    if marker.is_file():
        return ServerBuild(root, json.loads(marker.read_text()))
    return None


def ensure_build() -> ServerBuild:
    """The cached build, built first when there is none (minutes; see BUILD.json for what it cost)."""
    root = cache_root()
    root.mkdir(parents=True, exist_ok=True)
    with FileLock(str(root / f"{build_key()}.lock")):
        found = find_build()
        if found is not None:
            return found
        return _build(root / build_key())


def _build(dest: Path) -> ServerBuild:
    work = dest.with_name(dest.name + ".work")
    stage = dest.with_name(dest.name + ".stage")
    for path in (work, stage):
        shutil.rmtree(path, ignore_errors=True)
    work.mkdir(parents=True)
    seconds: dict[str, float] = {}
    t = time.perf_counter()
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check"]
    _run("download", [*pip, "download", "--no-deps", "--no-binary", ":all:",
                      f"llama-cpp-python=={LLAMA_CPP_PYTHON_VERSION}", "-d", str(work / "dist")], work)
    sdist = next((work / "dist").glob("llama_cpp_python-*.tar.gz"))
    with tarfile.open(sdist) as archive:
        if hasattr(tarfile, "data_filter"):
            archive.extractall(work / "src", filter="data")
        else:  # Python without extraction filters (older 3.10/3.11 patch releases)
            archive.extractall(work / "src")  # noqa: S202 (PyPI's own sdist of a pinned version)
    source = next((work / "src").glob("llama_cpp_python-*"))
    seconds["download"] = time.perf_counter() - t

    t = time.perf_counter()
    build_dir = work / "build"
    _run("configure", ["cmake", "-S", str(source / "vendor" / "llama.cpp"), "-B", str(build_dir), *CMAKE_FLAGS], work)
    jobs = os.environ.get(JOBS_ENV, "2")
    _run("compile", ["cmake", "--build", str(build_dir), "--target", *TARGETS, "-j", jobs], work)
    seconds["compile"] = time.perf_counter() - t

    t = time.perf_counter()
    env = {**os.environ, "CMAKE_ARGS": "-DLLAMA_BUILD=OFF -DLLAVA_BUILD=OFF"}
    _run("python-wheel", [*pip, "wheel", "--no-deps", str(sdist), "-w", str(work / "wheel")], work, env=env)
    wheel = next((work / "wheel").glob("llama_cpp_python-*.whl"))
    _run("python-install", [*pip, "install", "--no-deps", "--no-compile", "--target", str(stage / "py"), str(wheel)],
         work)
    seconds["python_package"] = time.perf_counter() - t

    (stage / "bin").mkdir(parents=True)
    built = build_dir / "bin"
    for path in [built / "llama-server", *sorted(built.glob("lib*.so*"))]:
        shutil.copy2(path, stage / "bin" / path.name, follow_symlinks=False)
    info = {
        "llama_cpp_python": LLAMA_CPP_PYTHON_VERSION,
        "cmake_flags": list(CMAKE_FLAGS),
        "targets": list(TARGETS),
        "jobs": jobs,
        "seconds": {k: round(v, 1) for k, v in seconds.items()},
        "built_at": time.strftime("%Y-%m-%d %H:%M:%S"),
    }
    (stage / "BUILD.json").write_text(json.dumps(info, indent=2) + "\n")
    os.replace(stage, dest)
    shutil.rmtree(work, ignore_errors=True)
    return ServerBuild(dest, info)


def _run(step: str, command: list[str], work: Path, env: dict | None = None) -> None:
    log = work / f"{step}.log"
    with open(log, "wb") as handle:
        result = subprocess.run(command, stdout=handle, stderr=subprocess.STDOUT, env=env, cwd=work)
    if result.returncode != 0:
        tail = log.read_text(errors="replace").strip().splitlines()[-15:]
        raise BuildFailed(f"{step} failed (exit {result.returncode}; log {log}):\n" + "\n".join(tail))


def _cmake_version(cmake: str) -> tuple[int, ...]:
    try:
        out = subprocess.run([cmake, "--version"], capture_output=True, text=True, check=True).stdout
        return tuple(int(x) for x in out.split()[2].split(".")[:2])
    except (OSError, subprocess.CalledProcessError, IndexError, ValueError):
        return (0,)
