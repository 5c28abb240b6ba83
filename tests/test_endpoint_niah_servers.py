"""`kanana-longctx niah --endpoint` against real servers serving SmolLM2 on the CPU (slow): llama.cpp's
llama-server (token ids, timings.cache_n) and llama-cpp-python's server (text, /extras/tokenize), built once into a
cache and started by the fixtures in conftest.py. The CLI runs in a child process where the test kills it."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from kanana_longctx.cli import app
from kanana_longctx.results import load_results, read_run_info

pytestmark = pytest.mark.slow
GRID = ["-l", "1000,1500", "-d", "25,75"]


def niah(url: str, out: Path, *args: str):
    return CliRunner().invoke(app, ["niah", "-m", "smollm2", "--endpoint", url, *GRID, "--out", str(out), *args])


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "kanana_longctx", *args]


def _one_error_line(result, text: str) -> None:
    assert result.exit_code == 2, result.output
    assert text in result.output and "Traceback" not in result.output
    assert sum(line.startswith("error:") for line in result.output.splitlines()) == 1


@pytest.fixture(scope="module")
def served_runs(llama_server, llama_cpp_python_server, tmp_path_factory):
    """One `niah --endpoint` run per server, prefix order on (the default)."""
    root = tmp_path_factory.mktemp("served")
    runs = {}
    for name, server in (("llama-server", llama_server), ("llama_cpp.server", llama_cpp_python_server)):
        result = niah(server.url, root / name)
        assert result.exit_code == 0, result.output
        runs[name] = root / name
    return runs


@pytest.mark.parametrize("kind", ["llama-server", "llama_cpp.server"])
def test_needles_are_found_through_each_server_at_the_probes_exact_length(kind, served_runs):
    out = served_runs[kind]
    rows = load_results(out)[0]
    assert len(rows) == 4
    for row in rows:
        assert row.score == 1.0, (row.probe_id, row.output)
        assert row.extra["server_prompt_tokens"] == row.n_tokens == row.length and row.extra["length_offset"] == 0
        if kind == "llama-server":
            assert row.extra["prompt_form"] == "ids"
        else:  # text prompts: the server's own tokenizer counted the probe before it was sent
            assert row.extra["prompt_form"] == "text" and row.extra["tokenized_tokens"] == row.n_tokens
    endpoint = read_run_info(out).extra["endpoint"]
    assert endpoint["kind"] == kind and endpoint["served_model"] and endpoint["yarn"].startswith("as served")
    assert (endpoint["server_context"] == 4096) == (kind == "llama-server")  # llama-cpp-python reports none


def test_prefix_order_shows_up_as_cached_tokens_on_llama_server(server_build, smollm2_gguf, server_logs, tmp_path):
    """On a fresh llama-server that keeps only each slot's last prompt (--cache-ram 0: no host-RAM prompt cache, which
    would serve any earlier prompt whatever the order), the same grid without and then with prefix order."""
    from servers.process import llama_server

    grid = ["-l", "500,1000", "-d", "25,75"]
    with llama_server(server_build, smollm2_gguf, server_logs, context=2048, extra=("--cache-ram", "0")) as server:
        for name, order in (("off", "--no-prefix-order"), ("on", "--prefix-order")):
            result = CliRunner().invoke(app, ["niah", "-m", "smollm2", "--endpoint", server.url, *grid, order,
                                              "--out", str(tmp_path / name)])
            assert result.exit_code == 0, result.output
    on, off = (load_results(tmp_path / name)[0] for name in ("on", "off"))  # rows in the order they were sent
    assert [r.needle_token_start for r in on] == sorted((r.needle_token_start for r in on), reverse=True)
    for row in on[1:]:  # each probe's pre-needle part came from the previous prompt's cache
        assert row.extra["cached_tokens"] >= row.needle_token_start, (row.probe_id, row.extra)
    cached = lambda rows: sum(r.extra["cached_tokens"] for r in rows)  # noqa: E731
    assert cached(on[1:]) > cached(off[1:])  # (the first row of "on" met the last prompt of "off")
    assert sum(r.prefill_tokens for r in on[1:]) < sum(r.prefill_tokens for r in off[1:])
    assert json.loads((tmp_path / "off" / "run.json").read_text())["extra"]["endpoint"]["prefix_order"] is False
    compared = CliRunner().invoke(app, ["plot", str(tmp_path / "off"), "--compare", str(tmp_path / "on"),
                                        "--out", str(tmp_path / "plots")])
    assert compared.exit_code == 0, compared.output
    assert list((tmp_path / "plots").glob("*.png"))


def test_resume_after_killing_the_client_mid_run_loses_nothing(llama_server, tmp_path, session_cache):
    out = tmp_path / "run"
    args = ["niah", "-m", "smollm2", "--endpoint", llama_server.url, "-l", "1000", "-d", "0,25,50,75,100",
            "--concurrency", "1", "--out", str(out)]
    env = {**os.environ, "KANANA_LONGCTX_CACHE": str(session_cache)}
    client = subprocess.Popen(_cli(*args), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    results = out / "results.jsonl"
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline and client.poll() is None:
        if results.exists() and results.read_bytes().count(b"\n") >= 2:
            break
        time.sleep(0.2)
    assert client.poll() is None, "the run ended before it could be killed"
    os.kill(client.pid, signal.SIGKILL)  # the client this test started, by its own pid
    client.wait()
    before = {r.probe_id: r for r in load_results(results)[0]}
    assert 2 <= len(before) < 5
    finished = subprocess.run(_cli(*args), env=env, capture_output=True, text=True, timeout=900)
    assert finished.returncode == 0, finished.stderr
    after = {r.probe_id: r for r in load_results(results)[0]}
    assert len(after) == 5 and len(load_results(results)[0]) == 5
    assert all(after[k] == row for k, row in before.items())  # the rows written before the kill are untouched
    assert f"{len(before)} resumed" in finished.stdout.replace("\n", " ")


def test_a_server_killed_mid_run_is_one_clear_line_and_loses_no_result(server_build, smollm2_gguf, server_logs,
                                                                        tmp_path, session_cache):
    from servers.process import llama_server

    out = tmp_path / "run"
    env = {**os.environ, "KANANA_LONGCTX_CACHE": str(session_cache)}
    with llama_server(server_build, smollm2_gguf, server_logs, context=2048) as server:
        args = ["niah", "-m", "smollm2", "--endpoint", server.url, "-l", "1000,1500", "-d", "0,50,100",
                "--concurrency", "1", "--out", str(out)]
        client = subprocess.Popen(_cli(*args), env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        results = out / "results.jsonl"
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline and client.poll() is None:
            if results.exists() and results.read_bytes().count(b"\n") >= 1:
                break
            time.sleep(0.1)
        server.kill()  # SIGKILL by the server's own pid, as an OOM kill would
        _, stderr = client.communicate(timeout=120)
    rows = load_results(results)[0]
    assert client.returncode == 2, stderr
    lines = [line for line in stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and "Traceback" not in stderr
    kept = re.search(r"(\d+) of 6 probes had finished and were kept", lines[0])
    assert kept and int(kept.group(1)) == len(rows) >= 1, lines[0]


def test_bad_inputs_against_real_servers_are_one_line_and_write_nothing(llama_server, llama_cpp_python_server,
                                                                         tmp_path):
    from servers.process import free_port

    out = tmp_path / "run"
    _one_error_line(niah(f"http://127.0.0.1:{free_port()}/v1", out), "cannot reach http://127.0.0.1:")
    _one_error_line(niah(llama_server.url, out, "--served-model", "kanana-8b"), "does not serve 'kanana-8b'")
    too_long = CliRunner().invoke(app, ["niah", "-m", "smollm2", "--endpoint", llama_server.url, "-l", "4096", "-d",
                                        "50", "--out", str(out)])
    _one_error_line(too_long, "the server's context is 4,096 tokens")
    assert "-c 41" in too_long.output  # the prompt plus the answer budget, as llama-server's flag
    assert not out.exists()
    # llama-cpp-python's server reports no context: its own refusal, recognised, after run.json and before any row
    refused = CliRunner().invoke(app, ["niah", "-m", "smollm2", "--endpoint", llama_cpp_python_server.url, "-l",
                                       "4200", "-d", "50", "--out", str(out)])
    _one_error_line(refused, "the server refused the request as too long for its context")
    assert "--n_ctx" in refused.output
    assert not (out / "results.jsonl").exists() or (out / "results.jsonl").read_bytes() == b""


def _config_check_llama_flags(smollm2_source, tmp_path) -> tuple[int, tuple[str, ...]]:
    """config --check's llama.cpp line for SmolLM2 with YaRN x2 over its 8K (the unpatched GGUF's flags)."""
    from kanana_longctx.backends.local import load_config
    from kanana_longctx.options import RunOptions

    config, _ = load_config(smollm2_source, RunOptions())
    model_dir = tmp_path / "smollm2-config"
    model_dir.mkdir()
    config.to_json_file(str(model_dir / "config.json"))
    result = CliRunner().invoke(app, ["config", str(model_dir), "--yarn", "--recipe", "custom", "--yarn-factor", "2",
                                      "--check", "--dry-run"])
    assert result.exit_code == 0, result.output
    line = next(line for line in result.output.splitlines() if "unpatched: llama-server" in line)
    flags = line.split("MODEL.gguf", 1)[1].split()
    context = int(flags[flags.index("-c") + 1])
    return context, tuple(f for i, f in enumerate(flags) if f != "-c" and (i == 0 or flags[i - 1] != "-c"))


def test_yarn_through_llama_server_finds_more_needles_past_the_native_context(
    server_build, smollm2_gguf, smollm2_source, server_logs, tmp_path
):
    from servers.process import llama_server

    context, yarn_flags = _config_check_llama_flags(smollm2_source, tmp_path)
    assert context == 16384 and "--rope-scaling" in yarn_flags and "yarn" in yarn_flags
    # llama-server caps each slot at the GGUF's training context (8192 here) whatever -c says; config --check's
    # command raises that GGUF key, and the plain server gets the same key, so only the YaRN flags differ.
    lifted = ("--override-kv", f"llama.context_length=int:{context}")
    assert " ".join(lifted) in " ".join(yarn_flags)
    yarn_flags = tuple(f for f in yarn_flags if f not in lifted)
    found = {}
    for name, extra, declared in (("plain", lifted, ["--no-yarn"]),
                                  ("yarn", lifted + yarn_flags, ["--yarn", "--yarn-factor", "2", "--yarn-original",
                                                                 "8192"])):
        with llama_server(server_build, smollm2_gguf, server_logs, context=context, extra=extra) as server:
            out = tmp_path / name
            result = CliRunner().invoke(app, ["niah", "-m", "smollm2", "--endpoint", server.url, "-l", "10000", "-d",
                                              "20,50", "--out", str(out), *declared])
            assert result.exit_code == 0, result.output
        rows = load_results(out)[0]
        assert all(r.extra["server_prompt_tokens"] == r.n_tokens == 10000 for r in rows)
        found[name] = sum(r.score for r in rows)
    assert found["yarn"] > found["plain"], found
    assert read_run_info(tmp_path / "yarn").yarn["factor"] == 2.0 and read_run_info(tmp_path / "plain").yarn is None
    compared = CliRunner().invoke(app, ["plot", str(tmp_path / "plain"), "--compare", str(tmp_path / "yarn"), "--out",
                                        str(tmp_path / "plots")])
    assert compared.exit_code == 0, compared.output
