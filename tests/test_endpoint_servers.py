"""The endpoint client against real servers serving SmolLM2 on the CPU: llama.cpp's llama-server (token-id
prompts, timings.cache_n) and llama-cpp-python's server (text prompts, /extras/tokenize). The servers are built
once into a cache (tests/servers/build.py) and started by the fixtures in conftest.py."""

from __future__ import annotations

import dataclasses

import pytest

from kanana_longctx.endpoint import EndpointConfig, GenerationSettings, RetryPolicy, check_context, discover, send_probes
from kanana_longctx.errors import (
    ContextOverflow, ContextTooSmall, EndpointRequestError, EndpointUnreachable, ServedModelError,
)
from kanana_longctx.scoring import score_contains

pytestmark = pytest.mark.slow
FAST = RetryPolicy(attempts=3, base_delay=0.05, max_delay=0.2)
SETTINGS = GenerationSettings(max_tokens=24)


@pytest.fixture(scope="module")
def probe_set(smollm2_tokenizer):
    from kanana_longctx.probes import ProbeRequest, build_probe_set

    return build_probe_set(ProbeRequest(lengths=(1000, 1500), depths=(25, 75)), smollm2_tokenizer)


def _send(url, probe_set, **options):
    config = EndpointConfig(url, retry=FAST)
    info = discover(config)
    rows = []
    report = send_probes(config, info, probe_set.probes, SETTINGS, lambda p, r: rows.append((p, r)),
                         shared_prefix_ids=probe_set.shared_prefix_ids, **options)
    return info, report, rows


@pytest.fixture(scope="module")
def llama_server_run(llama_server, probe_set):
    return _send(llama_server.url, probe_set, concurrency=1)


@pytest.fixture(scope="module")
def llama_cpp_python_run(llama_cpp_python_server, probe_set):
    return _send(llama_cpp_python_server.url, probe_set)


def test_llama_server_is_discovered(llama_server, llama_server_run):
    info, _, _ = llama_server_run
    assert info.kind == "llama-server" and info.token_ids and info.context == llama_server.context
    assert info.slots == 1 and info.version.startswith("b") and info.model in info.models


def test_llama_cpp_python_server_is_discovered(llama_cpp_python_run):
    info, report, _ = llama_cpp_python_run
    assert info.kind == "llama_cpp.server" and not info.token_ids and info.context is None
    assert info.tokenize_route == "/extras/tokenize" and info.version
    assert report.concurrency == 1  # one model behind a lock


@pytest.mark.parametrize("run", ["llama_server_run", "llama_cpp_python_run"])
def test_needles_are_found_and_the_server_saw_each_probes_exact_length(run, request, probe_set):
    info, report, rows = request.getfixturevalue(run)
    assert report.finished == len(rows) == len(probe_set.probes)
    for probe, reply in rows:
        assert score_contains(reply.text, probe.expected) == 1.0, (probe.probe_id, reply.text)
        assert reply.prompt_tokens == probe.n_tokens == probe.length and reply.length_offset == 0
        assert reply.completion_tokens > 0 and reply.finish_reason in ("stop", "length")
        if info.token_ids:
            assert reply.prompt_form == "ids" and reply.tokenized_tokens is None
        else:  # the text path: the server's own tokenize count, before sending, matched too
            assert reply.prompt_form == "text" and reply.tokenized_tokens == probe.n_tokens


def test_prefix_order_shows_up_as_cached_tokens_on_llama_server(llama_server_run):
    _, report, rows = llama_server_run
    assert report.prefix_ordered
    deepest_first = [p.needle_token_start for p, _ in rows]
    assert deepest_first == sorted(deepest_first, reverse=True)
    for probe, reply in rows[1:]:  # each probe's whole pre-needle part came from the previous prompt's cache
        assert reply.cached_tokens >= probe.needle_token_start, (probe.probe_id, reply.cached_tokens)
        assert reply.prefill_tokens <= probe.n_tokens - probe.needle_token_start


def test_an_unreachable_url_is_one_clear_error():
    from servers.process import free_port

    url = f"http://127.0.0.1:{free_port()}/v1"
    with pytest.raises(EndpointUnreachable) as info:
        discover(EndpointConfig(url, retry=FAST))
    message = str(info.value)
    assert f"cannot reach {url}/models after 3 tries" in message and "\n" not in message


@pytest.mark.parametrize("server", ["llama_server", "llama_cpp_python_server"])
def test_a_wrong_model_name_is_refused_before_sending(server, request):
    url = request.getfixturevalue(server).url
    with pytest.raises(ServedModelError, match="does not serve 'kanana-8b'"):
        discover(EndpointConfig(url, retry=FAST), "kanana-8b")


def test_a_context_too_small_is_found_before_sending(llama_server):
    info = discover(EndpointConfig(llama_server.url, retry=FAST))
    with pytest.raises(ContextTooSmall) as error:
        check_context(info, llama_server.context, SETTINGS.max_tokens)
    assert f"-c {llama_server.context + SETTINGS.max_tokens}" in str(error.value)


@pytest.mark.parametrize("server", ["llama_server", "llama_cpp_python_server"])
def test_the_servers_own_context_refusal_is_recognised(server, request, smollm2_tokenizer):
    from kanana_longctx.probes import ProbeRequest, build_probe_set

    running = request.getfixturevalue(server)
    too_long = build_probe_set(ProbeRequest(lengths=(running.context + 200,), depths=(50,)), smollm2_tokenizer)
    config = EndpointConfig(running.url, retry=FAST)
    info = discover(config)
    with pytest.raises(ContextOverflow) as error:
        send_probes(config, info, too_long.probes, SETTINGS, lambda p, r: None)
    assert error.value.limit == running.context and error.value.hint
    assert "\n" not in str(error.value)


def test_a_server_error_is_raised_after_bounded_retries(llama_cpp_python_server, probe_set):
    """llama-cpp-python's server answers a token-id prompt with HTTP 500: a real server error."""
    config = EndpointConfig(llama_cpp_python_server.url, retry=FAST)
    wrong = dataclasses.replace(discover(config), token_ids=True)
    rows = []
    with pytest.raises(EndpointRequestError) as error:
        send_probes(config, wrong, probe_set.probes[:1], SETTINGS, lambda p, r: rows.append(r))
    assert error.value.status == 500 and "after 3 tries" in str(error.value) and rows == []


def test_a_server_killed_mid_run_is_a_clear_error_and_loses_no_finished_result(
    server_build, smollm2_gguf, server_logs, probe_set
):
    from servers.process import llama_server

    with llama_server(server_build, smollm2_gguf, server_logs, context=2048) as server:
        config = EndpointConfig(server.url, retry=FAST)
        info = discover(config)
        probes = [p for p in probe_set.probes if p.length == 1000]
        kept = []

        def on_reply(probe, reply):
            kept.append(reply.probe_id)
            server.kill()  # SIGKILL by its own pid, as an OOM kill would

        with pytest.raises(EndpointUnreachable) as error:
            send_probes(config, info, probes, SETTINGS, on_reply, concurrency=1)
        assert server.process.returncode is not None
    assert len(kept) == 1
    assert f"1 of {len(probes)} probes had finished and were kept" in str(error.value)
