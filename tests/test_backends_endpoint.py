"""The endpoint backend behind the seam, without a server: an httpx2.MockTransport that answers like llama-server
(its /v1/models, /props and /v1/completions with usage and timings), the real SmolLM2 tokenizer and probes, the
unchanged runner (results, run.json, resume, summary) and the CLI's endpoint options."""

from __future__ import annotations

import json

import httpx2
import pytest
from typer.testing import CliRunner

from kanana_longctx.backends.endpoint import EndpointBackend
from kanana_longctx.cli import app
from kanana_longctx.endpoint import RetryPolicy
from kanana_longctx.errors import ContextTooSmall, EndpointRequestError
from kanana_longctx.options import RunOptions
from kanana_longctx.probes.build import ProbeRequest, build_probe_set
from kanana_longctx.results import load_results, read_run_info
from kanana_longctx.run.runner import execute

URL = "http://fake-llama:8080/v1"


class FakeLlamaServer:
    """llama-server as the endpoint client sees it. It answers each probe with its expected value (looked up by the
    prompt's ids), counts the prompt as `prompt_tokens` (+ `count_offset`), reports the shared prefix with the last
    prompt as `timings.cache_n`, and fails with `fail_status` on the completion numbered `fail_at`."""

    def __init__(self, probes, *, context=4096, count_offset=0, fail_at=None, fail_status=500, model="smollm2.gguf"):
        self.answers = {tuple(p.input_ids): p.expected for p in probes}
        self.context, self.count_offset, self.model = context, count_offset, model
        self.fail_at, self.fail_status = fail_at, fail_status
        self.completions: list[dict] = []
        self.headers: list[dict] = []
        self.last: tuple[int, ...] = ()

    def __call__(self, request: httpx2.Request) -> httpx2.Response:
        self.headers.append(dict(request.headers))
        key = f"{request.method} {request.url.path}"
        if key == "GET /v1/models":
            return httpx2.Response(200, json={"object": "list", "data": [{"id": self.model, "object": "model"}]})
        if key == "GET /props":
            return httpx2.Response(200, json={"default_generation_settings": {"n_ctx": self.context},
                                              "total_slots": 1, "build_info": "b9999-fake"})
        if key == "POST /v1/completions":
            return self._complete(json.loads(request.content))
        return httpx2.Response(404, json={"error": {"message": "Not Found"}})

    def _complete(self, body: dict) -> httpx2.Response:
        self.completions.append(body)
        if self.fail_at is not None and len(self.completions) >= self.fail_at:
            return httpx2.Response(self.fail_status, json={"error": {"message": "slot crashed", "code": 500}})
        ids = tuple(body["prompt"])
        cached = next((i for i, (a, b) in enumerate(zip(ids, self.last)) if a != b), min(len(ids), len(self.last)))
        self.last = ids
        text = f" {self.answers[ids]}\n" if ids in self.answers else " 1"
        usage = {"prompt_tokens": len(ids) + self.count_offset, "completion_tokens": 3,
                 "total_tokens": len(ids) + 3}
        return httpx2.Response(200, json={
            "choices": [{"text": text, "finish_reason": "stop", "index": 0}], "usage": usage,
            "timings": {"cache_n": cached, "prompt_n": len(ids) - cached},
        })


@pytest.fixture(scope="module")
def probe_set(smollm2_tokenizer):
    return build_probe_set(ProbeRequest(lengths=(400, 700), depths=(0, 50, 100), haystack="noise"), smollm2_tokenizer)


@pytest.fixture(autouse=True)
def quick_retries(monkeypatch):
    monkeypatch.setattr(EndpointBackend, "retry", RetryPolicy(attempts=3, base_delay=0.001, max_delay=0.002))


@pytest.fixture
def serve(monkeypatch):
    """Route every endpoint request of the test to `server` (a FakeLlamaServer)."""

    def use(server):
        monkeypatch.setattr(EndpointBackend, "transport", httpx2.MockTransport(server))
        return server

    return use


def test_an_endpoint_run_goes_through_the_unchanged_runner(serve, probe_set, smollm2_tokenizer, tmp_path):
    server = serve(FakeLlamaServer(probe_set.probes))
    summary = execute(probe_set, RunOptions(endpoint=URL), tmp_path, tokenizer=smollm2_tokenizer)
    records = {r.probe_id: r for r in load_results(tmp_path)[0]}
    assert sorted(records) == sorted(p.probe_id for p in probe_set.probes) and summary.accuracy == 1.0
    for probe in probe_set.probes:
        row = records[probe.probe_id]
        assert row.extra["server_prompt_tokens"] == probe.n_tokens == probe.length and row.extra["length_offset"] == 0
        assert row.extra["prompt_form"] == "ids" and row.outcome == "found" and row.new_tokens == 3
        assert row.prefill_tokens == probe.n_tokens - row.extra["cached_tokens"]
    sent = [tuple(body["prompt"]) for body in server.completions]
    assert sorted(sent) == sorted(tuple(p.input_ids) for p in probe_set.probes)  # the probes' own ids, once each
    assert all(body["temperature"] == 0.0 and body["top_k"] == 1 for body in server.completions)
    assert {body["max_tokens"] for body in server.completions} == {summary_budget(tmp_path)}
    info = read_run_info(tmp_path)
    endpoint = info.extra["endpoint"]
    assert info.engine == "endpoint" and info.device == "" and info.versions["server"] == "llama-server b9999-fake"
    assert (endpoint["url"], endpoint["served_model"], endpoint["server_context"]) == (URL, "smollm2.gguf", 4096)
    assert endpoint["yarn"].startswith("as served") and info.yarn is None
    assert summary.backend.describe() == f"engine endpoint, endpoint {URL}"
    again = execute(probe_set, RunOptions(endpoint=URL), tmp_path, tokenizer=smollm2_tokenizer)
    assert (again.skipped, again.ran) == (len(probe_set.probes), 0) and len(server.completions) == len(sent)


def summary_budget(out_dir) -> int:
    return read_run_info(out_dir).max_new_tokens


def test_prefix_order_puts_cached_tokens_in_the_rows(serve, probe_set, smollm2_tokenizer, tmp_path):
    serve(FakeLlamaServer(probe_set.probes))
    execute(probe_set, RunOptions(endpoint=URL), tmp_path / "on", tokenizer=smollm2_tokenizer)
    serve(FakeLlamaServer(probe_set.probes))
    execute(probe_set, RunOptions(endpoint=URL, prefix_order=False), tmp_path / "off", tokenizer=smollm2_tokenizer)
    cached = {d: sum(r.extra["cached_tokens"] for r in load_results(tmp_path / d)[0]) for d in ("on", "off")}
    assert cached["on"] > cached["off"]


def test_a_context_too_small_is_refused_before_anything_is_sent_or_written(serve, probe_set, smollm2_tokenizer,
                                                                           tmp_path):
    server = serve(FakeLlamaServer(probe_set.probes, context=700))
    with pytest.raises(ContextTooSmall) as error:
        execute(probe_set, RunOptions(endpoint=URL), tmp_path / "run", tokenizer=smollm2_tokenizer)
    message = str(error.value)
    assert "the server's context is 700 tokens" in message and "-c 7" in message and "\n" not in message
    assert "config --check" in message  # the launch command config --check prints for this model
    assert server.completions == [] and not (tmp_path / "run").exists()


def test_a_server_error_mid_run_keeps_every_finished_row_and_resume_finishes(serve, probe_set, smollm2_tokenizer,
                                                                              tmp_path):
    serve(FakeLlamaServer(probe_set.probes, fail_at=3))
    with pytest.raises(EndpointRequestError) as error:
        execute(probe_set, RunOptions(endpoint=URL, concurrency=1), tmp_path, tokenizer=smollm2_tokenizer)
    assert "HTTP 500 (after 3 tries)" in str(error.value) and "2 of 6 probes had finished" in str(error.value)
    assert len(load_results(tmp_path)[0]) == 2
    serve(FakeLlamaServer(probe_set.probes))
    summary = execute(probe_set, RunOptions(endpoint=URL), tmp_path, tokenizer=smollm2_tokenizer)
    ids = [r.probe_id for r in load_results(tmp_path)[0]]
    assert (summary.skipped, summary.ran) == (2, 4) and sorted(ids) == sorted(p.probe_id for p in probe_set.probes)


def test_a_server_count_other_than_the_probes_length_is_recorded_and_warned(serve, probe_set, smollm2_tokenizer,
                                                                            tmp_path):
    serve(FakeLlamaServer(probe_set.probes, count_offset=1))
    notes = []

    class Reporter:
        def start(self, *a): ...
        def advance(self, record): ...
        def note(self, message): notes.append(message)
        def stop(self): ...

    execute(probe_set, RunOptions(endpoint=URL), tmp_path, tokenizer=smollm2_tokenizer, reporter=Reporter())
    rows = load_results(tmp_path)[0]
    assert all(r.extra["server_prompt_tokens"] == r.n_tokens + 1 and r.extra["length_offset"] == 1 for r in rows)
    assert any("at a length other than the probe's (off by +1 to +1 tokens)" in n for n in notes)


def test_the_api_key_comes_from_the_environment_and_is_never_stored(serve, probe_set, smollm2_tokenizer, tmp_path,
                                                                    monkeypatch):
    server = serve(FakeLlamaServer(probe_set.probes))
    monkeypatch.setenv("MY_SERVER_KEY", "sk-secret-123")
    execute(probe_set, RunOptions(endpoint=URL, api_key_env="MY_SERVER_KEY", limit=1), tmp_path,
            tokenizer=smollm2_tokenizer)
    assert all(h.get("authorization") == "Bearer sk-secret-123" for h in server.headers)
    stored = (tmp_path / "run.json").read_text() + (tmp_path / "results.jsonl").read_text()
    assert "sk-secret-123" not in stored and read_run_info(tmp_path).extra["endpoint"]["api_key_env"] == "MY_SERVER_KEY"


def test_a_retform_answer_cut_at_its_line_break_is_no_budget_overrun():
    from kanana_longctx.backends.endpoint import generation_of
    from kanana_longctx.endpoint.completion import EndpointReply

    class P:
        form, probe_id, n_tokens = "retform", "L1-D0", 10

    def reply(text):
        return EndpointReply("L1-D0", text, "length", 8, 10, 0, 10, "ids")

    assert not generation_of(P, reply(" 1234567\nThe")).hit_max_new_tokens  # in-process decoding stops there
    assert generation_of(P, reply("\n 1234567 and")).hit_max_new_tokens  # a leading break is no answer's end


# -- the CLI -----------------------------------------------------------------------------------------------------
def _niah(*args):
    return CliRunner().invoke(app, ["niah", "-H", "noise", "-l", "400", "-d", "0,100", *args])


def _one_error_line(result, text):
    assert result.exit_code == 2, result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert text in result.output and "Traceback" not in result.output
    assert sum(line.startswith("error:") for line in lines) == 1


@pytest.mark.parametrize("args,text", [
    (["--device", "cpu"], "--device cannot be used with --endpoint"),
    (["--engine", "fast", "--batch-size", "2"], "--engine, --batch-size cannot be used with --endpoint"),
    (["--max-memory", "10"], "--max-memory cannot be used with --endpoint"),
    (["--dtype", "float32", "--attn", "sdpa"], "--dtype, --attn cannot be used with --endpoint"),
    (["--concurrency", "0"], "--concurrency must be at least 1"),
    (["--api-key-env", "NOT_SET_ANYWHERE"], "--api-key-env NOT_SET_ANYWHERE: that environment variable is not set"),
])
def test_options_that_make_no_sense_with_an_endpoint_are_refused(args, text, tmp_path):
    result = _niah("-m", "smollm2", "--endpoint", URL, *args, "--out", str(tmp_path / "run"))
    _one_error_line(result, text)
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("args", [["--concurrency", "2"], ["--served-model", "x"], ["--no-prefix-order"]])
def test_endpoint_options_without_an_endpoint_are_refused(args, tmp_path):
    _one_error_line(_niah(*args, "--out", str(tmp_path / "run")), "only applies with --endpoint")


def test_cli_bad_endpoint_inputs_are_one_line_and_nothing_is_written(serve, probe_set, tmp_path):
    from servers.process import free_port

    out = tmp_path / "run"
    unreachable = CliRunner().invoke(app, ["niah", "-m", "smollm2", "-H", "noise", "-l", "400", "-d", "0", "--endpoint",
                                           f"http://127.0.0.1:{free_port()}/v1", "--out", str(out)])
    _one_error_line(unreachable, "cannot reach http://127.0.0.1:")
    serve(FakeLlamaServer(probe_set.probes, model="/nowhere/served.gguf"))
    unknown = _niah("--endpoint", URL, "--out", str(out))  # no -m, and the served name resolves to nothing here
    _one_error_line(unknown, "the server serves '/nowhere/served.gguf', which is not a local model")
    wrong = _niah("-m", "smollm2", "--endpoint", URL, "--served-model", "kanana-8b", "--out", str(out))
    _one_error_line(wrong, "does not serve 'kanana-8b'")
    assert not out.exists()


def test_cli_endpoint_run_then_plot(serve, probe_set, tmp_path):
    serve(FakeLlamaServer(probe_set.probes))
    out = tmp_path / "run"
    result = _niah("-m", "smollm2", "--endpoint", URL, "--out", str(out))
    assert result.exit_code == 0, result.output
    assert "engine endpoint" in result.output and "prefix cache" in result.output
    plotted = CliRunner().invoke(app, ["plot", str(out), "--out", str(tmp_path / "plots")])
    assert plotted.exit_code == 0, plotted.output
    assert [p.stat().st_size > 0 for p in (tmp_path / "plots").glob("*.png")] == [True]


def test_cli_a_server_error_is_one_line_and_keeps_what_finished(serve, probe_set, tmp_path):
    serve(FakeLlamaServer(probe_set.probes, fail_at=2, fail_status=503))
    out = tmp_path / "run"
    result = _niah("-m", "smollm2", "--endpoint", URL, "--concurrency", "1", "--out", str(out))
    _one_error_line(result, "HTTP 503 (after 3 tries): slot crashed (1 of 2 probes had finished and were kept)")
    assert len(load_results(out)[0]) == 1 and read_run_info(out).engine == "endpoint"


def test_yarn_declared_for_the_server_is_recorded_as_served_and_keeps_runs_apart(serve, probe_set,
                                                                                 smollm2_tokenizer, tmp_path):
    from kanana_longctx.errors import ResultsError

    serve(FakeLlamaServer(probe_set.probes))
    declared = RunOptions(endpoint=URL, yarn=True, yarn_factor=2.0, yarn_original=8192, limit=1)
    execute(probe_set, declared, tmp_path, tokenizer=smollm2_tokenizer)
    info = read_run_info(tmp_path)
    assert info.yarn == {"factor": 2.0, "original_max_position_embeddings": 8192, "as_served": True}
    assert info.extra["endpoint"]["yarn"].startswith("as served: declared with --yarn")
    with pytest.raises(ResultsError, match="different configuration .yarn"):  # a server without YaRN: another run
        execute(probe_set, RunOptions(endpoint=URL, limit=1), tmp_path, tokenizer=smollm2_tokenizer)


def test_without_m_the_served_models_own_path_is_the_tokenizer(serve, probe_set, smollm2_source, tmp_path):
    gguf = str(smollm2_source.directory / smollm2_source.gguf_file)
    serve(FakeLlamaServer(probe_set.probes, model=gguf))  # llama-server lists the GGUF it was started with
    out = tmp_path / "run"
    result = _niah("--endpoint", URL, "--out", str(out))
    assert result.exit_code == 0, result.output
    info = read_run_info(out)
    assert info.model == gguf and info.extra["endpoint"]["served_model"] == gguf
    assert [r.score for r in load_results(out)[0]] == [1.0, 1.0]  # the probes the server knows: the same tokenizer


def test_ctrl_c_mid_run_keeps_the_rows_that_finished(monkeypatch, probe_set, smollm2_tokenizer, tmp_path):
    import asyncio
    import signal

    server = FakeLlamaServer(probe_set.probes)

    async def handler(request):
        if request.url.path == "/v1/completions" and len(server.completions) == 2:
            server.completions.append({})
            signal.raise_signal(signal.SIGINT)  # the user's Ctrl-C while the third probe is with the server
            await asyncio.sleep(30)
        return server(request)

    monkeypatch.setattr(EndpointBackend, "transport", httpx2.MockTransport(handler))
    with pytest.raises(KeyboardInterrupt):
        execute(probe_set, RunOptions(endpoint=URL, concurrency=1), tmp_path, tokenizer=smollm2_tokenizer)
    assert len(load_results(tmp_path)[0]) == 2
    monkeypatch.setattr(EndpointBackend, "transport", httpx2.MockTransport(FakeLlamaServer(probe_set.probes)))
    summary = execute(probe_set, RunOptions(endpoint=URL), tmp_path, tokenizer=smollm2_tokenizer)
    assert (summary.skipped, summary.ran) == (2, 4)
