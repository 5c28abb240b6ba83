"""The endpoint client's pure parts, without a server: refusal recognition, URLs, retries (httpx2.MockTransport),
discovery of each engine's answers, pre-flight, greedy request bodies, prefix order, bounded concurrency."""

from __future__ import annotations

import asyncio
import json

import httpx2
import pytest

from kanana_longctx.endpoint import (
    EndpointConfig, GenerationSettings, RetryPolicy, check_context, context_refusal, discover, prefix_order,
    request_body, send_probes, split_base_url, warmup_ids,
)
from kanana_longctx.endpoint.discovery import LLAMA_CPP_PYTHON, LLAMA_SERVER, SGLANG, TGI, VLLM, ServerInfo
from kanana_longctx.endpoint.transport import Transport
from kanana_longctx.errors import (
    ContextOverflow, ContextTooSmall, EndpointError, EndpointRequestError, EndpointTimeout, EndpointUnreachable,
    KananaError, ServedModelError,
)

FAST = RetryPolicy(attempts=3, base_delay=0.001, max_delay=0.002)


# -- over-context refusals, as each engine words them ---------------------------------------------------------
REFUSALS = [
    ("llama-server", 400, {"error": {"code": 400, "type": "exceed_context_size_error", "n_prompt_tokens": 5000,
                                     "n_ctx": 4096, "message": "request (5000 tokens) exceeds the available context"
                                     " size (4096 tokens), try increasing it"}}, 5000, 4096),
    ("llama-server", 400, {"error": {"message": "request (5000 tokens) exceeds the available context size (4096 "
                                     "tokens), try increasing it"}}, 5000, 4096),
    ("llama_cpp.server", 400, {"error": {"message": "This model's maximum context length is 4096 tokens, however you"
                                         " requested 5006 tokens (5001 in your prompt; 5 for the completion). Please "
                                         "reduce your prompt; or completion length.", "type": "invalid_request_error",
                                         "param": "messages", "code": "context_length_exceeded"}}, 5001, 4096),
    ("vLLM", 400, {"object": "error", "message": "This model's maximum context length is 8192 tokens. However, you "
                   "requested 8200 tokens (8184 in the messages, 16 in the completion). Please reduce the length of "
                   "the messages or completion.", "type": "BadRequestError", "code": 400}, 8184, 8192),
    ("vLLM", 400, {"error": {"message": "'max_tokens' or 'max_completion_tokens' is too large: 16. This model's "
                             "maximum context length is 8192 tokens and your request has 8184 input tokens (16 > "
                             "8192 - 8184).", "type": "BadRequestError"}}, 8184, 8192),
    ("vLLM", 400, {"error": {"message": "This model's maximum context length is 8192 tokens. However, your request "
                             "has 9000 input tokens. Please reduce the length of the input messages."}}, 9000, 8192),
    ("SGLang", 400, {"object": "error", "message": "The input (9000 tokens) is longer than the model's context length"
                     " (8192 tokens).", "type": "BadRequestError", "code": 400}, 9000, 8192),
    ("SGLang", 400, {"object": "error", "message": "Requested token count exceeds the model's maximum context length "
                     "of 8192 tokens. You requested a total of 8200 tokens: 8184 tokens from the input messages and "
                     "16 tokens for the completion. Please reduce the number of tokens in the input messages or the "
                     "completion to fit within the limit."}, 8184, 8192),
    ("TGI", 422, {"error": "Input validation error: `inputs` tokens + `max_new_tokens` must be <= 8192. Given: 8184 "
                  "`inputs` tokens and 16 `max_new_tokens`", "error_type": "validation"}, 8184, 8192),
    ("TGI", 422, {"error": "Input validation error: `inputs` must have less than 4096 tokens. Given: 5000",
                  "error_type": "validation"}, 5000, 4096),
]


@pytest.mark.parametrize("engine,status,body,prompt,limit", REFUSALS, ids=[f"{r[0]}-{i}" for i, r in enumerate(REFUSALS)])
def test_every_engines_context_refusal_is_recognised(engine, status, body, prompt, limit):
    refusal = context_refusal(status, body)
    assert refusal is not None
    assert (refusal.engine, refusal.prompt_tokens, refusal.limit) == (engine, prompt, limit)


@pytest.mark.parametrize("status,body", [
    (400, {"error": {"message": "Input should be a valid string", "type": "invalid_request_error"}}),
    (404, {"detail": "Not Found"}),
    (500, {"error": {"message": "This model's maximum context length is 4096 tokens, however you requested"}}),
    (422, "plain text validation error"),
])
def test_other_errors_are_not_refusals(status, body):
    assert context_refusal(status, body) is None


# -- URLs ------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("url,api,root", [
    ("http://127.0.0.1:8000/v1", "http://127.0.0.1:8000/v1", "http://127.0.0.1:8000"),
    ("http://127.0.0.1:8000/v1/", "http://127.0.0.1:8000/v1", "http://127.0.0.1:8000"),
    ("http://127.0.0.1:8000", "http://127.0.0.1:8000/v1", "http://127.0.0.1:8000"),
    ("127.0.0.1:8080", "http://127.0.0.1:8080/v1", "http://127.0.0.1:8080"),
    ("https://host/proxy/v1/completions", "https://host/proxy/v1", "https://host/proxy"),
])
def test_base_urls(url, api, root):
    assert split_base_url(url) == (api, root)


@pytest.mark.parametrize("url", ["ftp://host/v1", "http://", "http://host:notaport/v1"])
def test_bad_urls_are_one_line_errors(url):
    with pytest.raises(EndpointError) as info:
        split_base_url(url)
    assert "\n" not in str(info.value)


# -- retries -----------------------------------------------------------------------------------------------------
def _post(handler, policy=FAST, path="/completions"):
    async def go():
        config = EndpointConfig("http://test/v1", retry=policy)
        async with Transport(config, transport=httpx2.MockTransport(handler)) as http:
            return await http.post(path, {"prompt": "x"})

    return asyncio.run(go())


def test_5xx_and_429_are_retried_with_backoff_until_success():
    answers = [httpx2.Response(503, json={"error": "busy"}), httpx2.Response(429, headers={"Retry-After": "0"}),
               httpx2.Response(200, json={"ok": True})]
    calls = []

    def handler(request):
        calls.append(request)
        return answers[len(calls) - 1]

    answer = _post(handler)
    assert answer.body == {"ok": True} and answer.attempts == 3 and len(calls) == 3


def test_retries_are_bounded():
    calls = []

    def handler(request):
        calls.append(request)
        return httpx2.Response(500, json={"error": {"message": "boom"}})

    with pytest.raises(EndpointRequestError) as info:
        _post(handler)
    assert len(calls) == FAST.attempts and info.value.status == 500
    assert "HTTP 500 (after 3 tries): boom" in str(info.value)


@pytest.mark.parametrize("status", [400, 401, 404, 422])
def test_other_4xx_are_raised_once(status):
    calls = []

    def handler(request):
        calls.append(request)
        return httpx2.Response(status, json={"error": {"message": "nope"}})

    with pytest.raises(EndpointRequestError) as info:
        _post(handler)
    assert len(calls) == 1 and info.value.status == status


def test_a_context_refusal_is_not_retried():
    calls = []

    def handler(request):
        calls.append(request)
        return httpx2.Response(400, json=REFUSALS[0][2])

    with pytest.raises(ContextOverflow) as info:
        _post(handler)
    assert len(calls) == 1 and (info.value.needed, info.value.limit) == (5000, 4096)


def test_connection_errors_are_retried_then_unreachable():
    calls = []

    def handler(request):
        calls.append(request)
        raise httpx2.ConnectError("Connection refused", request=request)

    with pytest.raises(EndpointUnreachable) as info:
        _post(handler)
    assert len(calls) == FAST.attempts and "after 3 tries" in str(info.value)


def test_a_read_timeout_is_not_retried():
    calls = []

    def handler(request):
        calls.append(request)
        raise httpx2.ReadTimeout("timed out", request=request)

    with pytest.raises(EndpointTimeout):
        _post(handler)
    assert len(calls) == 1


def test_backoff_doubles_up_to_the_cap_and_honours_retry_after():
    import random

    policy = RetryPolicy(attempts=6, base_delay=0.5, max_delay=4.0)
    rng = random.Random(0)
    delays = [policy.delay(n, rng) for n in range(1, 6)]
    for n, d in enumerate(delays, start=1):
        assert min(4.0, 0.5 * 2 ** (n - 1)) * 0.5 <= d <= min(4.0, 0.5 * 2 ** (n - 1))
    assert policy.delay(1, rng, retry_after=2.0) == 2.0
    assert policy.delay(1, rng, retry_after=60.0) == 4.0


def test_errors_are_domain_errors_with_exit_2():
    for cls in (EndpointUnreachable, ServedModelError, ContextTooSmall, ContextOverflow, EndpointRequestError,
                EndpointTimeout):
        assert issubclass(cls, KananaError) and cls.exit_code == 2


# -- discovery ----------------------------------------------------------------------------------------------------
def _server(routes: dict):
    def handler(request):
        key = f"{request.method} {request.url.path}"
        if key in routes:
            return httpx2.Response(200, json=routes[key])
        return httpx2.Response(404, json={"detail": "Not Found"})

    return httpx2.MockTransport(handler)


VLLM_ROUTES = {
    "GET /v1/models": {"object": "list", "data": [{"id": "kakaocorp/kanana", "object": "model", "owned_by": "vllm",
                                                   "max_model_len": 131072}]},
    "GET /version": {"version": "0.11.0"},
}
SGLANG_ROUTES = {"GET /v1/models": {"data": [{"id": "m", "owned_by": "sglang", "max_model_len": 32768}]}}
TGI_ROUTES = {
    "GET /v1/models": {"data": [{"id": "org/m", "owned_by": "org"}]},
    "GET /info": {"model_id": "org/m", "max_input_tokens": 130048, "max_total_tokens": 131072, "version": "3.3.6"},
}
LCP_ROUTES = {
    "GET /v1/models": {"object": "list", "data": [{"id": "/models/m.gguf", "owned_by": "me"}]},
    "GET /openapi.json": {"info": {"title": "🦙 llama.cpp Python API", "version": "0.3.36"}, "paths": {}},
}


@pytest.mark.parametrize("routes,kind,context,version,ids,model", [
    (VLLM_ROUTES, VLLM, 131072, "0.11.0", True, "kakaocorp/kanana"),
    (SGLANG_ROUTES, SGLANG, 32768, "", True, "m"),
    (TGI_ROUTES, TGI, 131072, "3.3.6", False, "tgi"),
    (LCP_ROUTES, LLAMA_CPP_PYTHON, None, "0.3.36", False, "/models/m.gguf"),
])
def test_discovery_tells_the_engines_apart(routes, kind, context, version, ids, model):
    info = discover(EndpointConfig("http://test/v1", retry=FAST), transport=_server(routes))
    assert (info.kind, info.context, info.version, info.token_ids, info.model) == (kind, context, version, ids, model)
    assert ServerInfo.from_dict(json.loads(json.dumps(info.to_dict()))) == info


def test_discovery_checks_the_model_name():
    config = EndpointConfig("http://test/v1", retry=FAST)
    with pytest.raises(ServedModelError, match="does not serve 'other' .it serves 'kakaocorp/kanana'"):
        discover(config, "other", transport=_server(VLLM_ROUTES))
    two = {"GET /v1/models": {"data": [{"id": "a", "max_model_len": 8}, {"id": "b", "max_model_len": 8}]}}
    with pytest.raises(ServedModelError, match="several models"):
        discover(config, transport=_server(two))
    assert discover(config, "b", transport=_server(two)).model == "b"


def test_discovery_of_a_url_that_is_not_an_openai_base():
    with pytest.raises(EndpointError, match="not the base URL"):
        discover(EndpointConfig("http://test/api", retry=FAST), transport=_server({}))


# -- pre-flight ---------------------------------------------------------------------------------------------------
def _info(kind, context, **kw):
    return ServerInfo(url="http://x/v1", kind=kind, model="m", models=("m",), context=context,
                      context_source="test", **kw)


def test_preflight_follows_each_engines_rule():
    assert check_context(_info(VLLM, 1024), 1000, 24) == ""  # vLLM allows p + m == L
    with pytest.raises(ContextTooSmall):
        check_context(_info(SGLANG, 1024), 1000, 24)  # SGLang refuses p + m >= L
    with pytest.raises(ContextTooSmall) as info:
        check_context(_info(LLAMA_SERVER, 1000), 1000, 24)
    assert (info.value.needed, info.value.limit) == (1024, 1000) and "-c 1024" in str(info.value)
    with pytest.raises(ContextTooSmall, match="at most 900 tokens"):
        check_context(_info(TGI, 4096, max_input_tokens=900), 1000, 24)
    note = check_context(_info(LLAMA_CPP_PYTHON, None), 1000, 24)
    assert "not checked" in note


def test_preflight_advice_uses_the_config_check_hint():
    from kanana_longctx.yarn.params import YarnParams
    from kanana_longctx.yarn.serving import serving_hints

    hints = serving_hints("kakaocorp/kanana", YarnParams())
    with pytest.raises(ContextTooSmall) as info:
        check_context(_info(VLLM, 32768), 131072, 24, hints)
    vllm = next(h for h in hints if h.engine == "vLLM")
    assert vllm.command in str(info.value) and vllm.command in info.value.hint


# -- greedy requests ----------------------------------------------------------------------------------------------
class _Probe:
    def __init__(self, cut, n, ids=None, pid=None):
        self.needle_token_start, self.n_tokens = cut, n
        self.input_ids = tuple(ids) if ids is not None else tuple(range(n))
        self.prompt, self.probe_id = f"text {n}", pid or f"L{n}-C{cut}"


def test_request_bodies_are_greedy_for_every_engine():
    probe = _Probe(3, 8)
    settings = GenerationSettings(max_tokens=20, stop=("\n",), stop_token_ids=(2,), seed=7)
    llama = request_body(_info(LLAMA_SERVER, 4096, token_ids=True), probe, settings)
    assert llama["prompt"] == list(range(8)) and llama["top_k"] == 1 and llama["cache_prompt"] is True
    assert llama["temperature"] == 0.0 and llama["repeat_penalty"] == 1.0 and llama["max_tokens"] == 20
    text = request_body(_info(LLAMA_CPP_PYTHON, None), probe, settings)
    assert text["prompt"] == "text 8" and text["repeat_penalty"] == 1.0 and text["top_k"] == 1
    vllm = request_body(_info(VLLM, 4096, token_ids=True), probe, settings)
    assert vllm["stop_token_ids"] == [2] and vllm["repetition_penalty"] == 1.0 and vllm["seed"] == 7
    tgi = request_body(_info(TGI, 4096), probe, GenerationSettings(10, stop=tuple("abcdef")))
    assert tgi["stop"] == list("abcd") and tgi["model"] == "m"


# -- order ---------------------------------------------------------------------------------------------------------
def test_prefix_order_puts_each_probes_prefix_inside_the_one_before(smollm2_tokenizer):
    from kanana_longctx.probes import ProbeRequest, build_probe_set

    probe_set = build_probe_set(ProbeRequest(lengths=(300, 600), depths=(0, 30, 60, 100)), smollm2_tokenizer)
    ordered = prefix_order(probe_set.probes)
    assert sorted(p.probe_id for p in ordered) == sorted(p.probe_id for p in probe_set.probes)
    for before, after in zip(ordered, ordered[1:]):
        cut = after.needle_token_start
        assert before.needle_token_start >= cut
        assert before.input_ids[:cut] == after.input_ids[:cut]  # a last-prompt cache serves all of it
    warm = warmup_ids(ordered, probe_set.shared_prefix_ids)
    deepest = ordered[0]
    assert warm == deepest.input_ids[: deepest.needle_token_start]
    assert all(p.input_ids[: p.needle_token_start] == warm[: p.needle_token_start] for p in ordered)


def test_no_warmup_for_a_short_shared_prefix():
    probes = [_Probe(10, 50), _Probe(20, 50)]
    assert warmup_ids(probes, tuple(range(50))) == ()


# -- sending -------------------------------------------------------------------------------------------------------
def _completion(n_prompt, text="42", cached=None):
    usage = {"prompt_tokens": n_prompt, "completion_tokens": 1, "total_tokens": n_prompt + 1}
    if cached is not None:
        usage["prompt_tokens_details"] = {"cached_tokens": cached}
    return {"choices": [{"text": text, "finish_reason": "stop"}], "usage": usage}


def test_concurrency_is_bounded_and_the_warmup_goes_first_alone():
    state = {"now": 0, "max": 0, "order": []}

    async def handler(request):
        body = json.loads(request.content)
        state["order"].append((len(body["prompt"]), body["max_tokens"], state["now"]))
        state["now"] += 1
        state["max"] = max(state["max"], state["now"])
        await asyncio.sleep(0.01)
        state["now"] -= 1
        return httpx2.Response(200, json=_completion(len(body["prompt"]), cached=5))

    shared = tuple(range(1000))
    probes = [_Probe(cut, 900, ids=shared[:900]) for cut in (300, 600, 800, 500, 400, 700, 350, 650)]
    rows = []
    report = send_probes(EndpointConfig("http://test/v1", retry=FAST), _info(VLLM, 4096, token_ids=True), probes,
                         GenerationSettings(8), lambda p, r: rows.append((p, r)), concurrency=3,
                         shared_prefix_ids=shared, transport=httpx2.MockTransport(handler))
    assert state["order"][0] == (800, 1, 0)  # the bare prefix up to the deepest needle, one token, nothing beside it
    assert state["max"] == 3 and report.concurrency == 3 and report.warmup_tokens == 800
    assert len(rows) == report.finished == 8
    assert {id(p) for p, _ in rows} == {id(p) for p in probes}
    assert all(r.prompt_tokens == 900 and r.length_offset == 0 and r.cached_tokens == 5 for _, r in rows)


def test_the_first_error_stops_new_requests_and_keeps_what_finished():
    seen = []

    def handler(request):
        body = json.loads(request.content)
        seen.append(len(body["prompt"]))
        if len(seen) == 3:
            return httpx2.Response(400, json={"error": {"message": "bad request", "type": "invalid_request_error"}})
        return httpx2.Response(200, json=_completion(len(body["prompt"])))

    probes = [_Probe(100 - i, 200 + i, pid=f"p{i}") for i in range(6)]
    rows = []
    with pytest.raises(EndpointRequestError) as info:
        send_probes(EndpointConfig("http://test/v1", retry=FAST), _info(VLLM, 4096, token_ids=True), probes,
                    GenerationSettings(8), lambda p, r: rows.append(r.probe_id), concurrency=1,
                    transport=httpx2.MockTransport(handler))
    assert rows == ["p0", "p1"] and len(seen) == 3
    assert "2 of 6 probes had finished and were kept" in str(info.value) and info.value.status == 400


def test_a_refusal_while_sending_carries_the_launch_advice():
    def handler(request):
        return httpx2.Response(400, json=REFUSALS[0][2])

    with pytest.raises(ContextOverflow) as info:
        send_probes(EndpointConfig("http://test/v1", retry=FAST), _info(LLAMA_SERVER, None, token_ids=True),
                    [_Probe(10, 5000)], GenerationSettings(24), lambda p, r: None,
                    transport=httpx2.MockTransport(handler))
    assert "-c 5024" in info.value.hint and "\n" not in str(info.value)


def test_ctrl_c_cancels_what_is_in_flight_and_keeps_what_finished():
    import signal

    seen = []

    async def handler(request):
        seen.append(request)
        if len(seen) == 3:
            signal.raise_signal(signal.SIGINT)  # the user's Ctrl-C while the third probe is with the server
            await asyncio.sleep(30)
        return httpx2.Response(200, json=_completion(len(json.loads(request.content)["prompt"])))

    probes = [_Probe(100 - i, 200 + i, pid=f"p{i}") for i in range(5)]
    rows = []
    with pytest.raises(KeyboardInterrupt):
        send_probes(EndpointConfig("http://test/v1", retry=FAST), _info(VLLM, 4096, token_ids=True), probes,
                    GenerationSettings(8), lambda p, r: rows.append(r.probe_id), concurrency=1,
                    transport=httpx2.MockTransport(handler))
    assert rows == ["p0", "p1"] and len(seen) == 3
