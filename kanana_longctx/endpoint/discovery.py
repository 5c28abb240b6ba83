"""What is serving at a URL: the engine, the model name to send, its context, version and prompt form.

Usage: `info = discover(EndpointConfig("http://127.0.0.1:8080/v1"), served_model=None)`

One `GET /v1/models` (with retries: the first sign of an unreachable URL), then the engine's own routes, each one
try: llama-server answers `/props` (per-slot `n_ctx`, `total_slots`, `build_info`), TGI `/info`
(`max_input_tokens`, `max_total_tokens`, `version`), vLLM and SGLang list `max_model_len` with their models and
say who owns them (`/version` for the version), llama-cpp-python's server is known by its OpenAPI title (it
reports no context). llama-server, vLLM and SGLang take token-id prompts; the others take text, whose length the
client checks with the server's own tokenize route.
"""

from __future__ import annotations

import asyncio
from dataclasses import asdict, dataclass, fields

from kanana_longctx.endpoint.transport import EndpointConfig, Transport
from kanana_longctx.errors import EndpointError, EndpointRequestError, ServedModelError

LLAMA_SERVER = "llama-server"
LLAMA_CPP_PYTHON = "llama_cpp.server"
VLLM = "vLLM"
SGLANG = "SGLang"
TGI = "TGI"
GENERIC = "openai-compatible"
KINDS = (LLAMA_SERVER, LLAMA_CPP_PYTHON, VLLM, SGLANG, TGI, GENERIC)

_TOKEN_ID_KINDS = frozenset({LLAMA_SERVER, VLLM, SGLANG})
_TOKENIZE_ROUTES = {
    LLAMA_SERVER: "/tokenize",
    VLLM: "/tokenize",
    SGLANG: "/v1/tokenize",
    LLAMA_CPP_PYTHON: "/extras/tokenize",
    TGI: "/tokenize",
}
# Servers that run one request at a time: more in flight only queue (and wait out their timeouts in the queue).
_SERIAL_KINDS = frozenset({LLAMA_CPP_PYTHON})
DEFAULT_CONCURRENCY = 4


@dataclass(frozen=True)
class ServerInfo:
    """One server as discovered; `to_dict` is what a run directory records about it."""

    url: str  # the OpenAI base URL
    kind: str  # one of KINDS
    model: str  # the name sent as `model` with every request
    models: tuple[str, ...]  # every name /v1/models lists
    context: int | None  # tokens one request may hold (prompt + answer), where the server reports it
    context_source: str  # where `context` comes from, or why there is none
    version: str = ""  # "" where the server does not say
    token_ids: bool = False  # takes `prompt: [ids]` on /v1/completions
    tokenize_route: str = ""  # the server's tokenize route ("" for none)
    slots: int | None = None  # llama-server's parallel slots (each with its own context and prompt cache)
    max_input_tokens: int | None = None  # TGI's separate limit on the prompt alone

    @property
    def serial(self) -> bool:
        return self.kind in _SERIAL_KINDS

    def default_concurrency(self) -> int:
        """Requests in flight by default: 1 where the server serialises them anyway (llama-cpp-python: one model
        behind a lock), llama-server's slot count (more only queue, and each slot keeps its own prompt cache), else
        4: enough to keep a batching server (vLLM, SGLang, TGI) busy between one request's decode and the next
        one's prefill, few enough that four long prompts' KV fit beside each other."""
        if self.serial:
            return 1
        if self.kind == LLAMA_SERVER and self.slots:
            return max(1, self.slots)
        return DEFAULT_CONCURRENCY

    def to_dict(self) -> dict:
        data = asdict(self)
        data["models"] = list(self.models)
        return data

    @classmethod
    def from_dict(cls, data: dict) -> "ServerInfo":
        names = {f.name for f in fields(cls)}
        kwargs = {k: v for k, v in data.items() if k in names}
        kwargs["models"] = tuple(kwargs.get("models", ()))
        return cls(**kwargs)


def discover(config: EndpointConfig, served_model: str | None = None, *, transport=None) -> ServerInfo:
    """Ask the server what it is (see the module docstring). Raises EndpointUnreachable, ServedModelError or
    EndpointRequestError with one line."""
    return asyncio.run(discover_async(config, served_model, transport=transport))


async def discover_async(config: EndpointConfig, served_model: str | None = None, *, transport=None) -> ServerInfo:
    async with Transport(config, transport=transport) as http:
        try:
            listing = (await http.get("/models")).body
        except EndpointRequestError as exc:
            if exc.status == 404:
                raise EndpointError(
                    f"{http.url('/models')} answered 404: {config.url} is not the base URL of an OpenAI-compatible "
                    "server (it usually ends in /v1)"
                ) from None
            raise
        entries = _model_entries(listing, http.url("/models"))
        kind, facts = await _identify(http, entries)
    names = tuple(dict.fromkeys(name for entry in entries for name in _names(entry)))
    model = _choose_model(served_model, names, entries, config.url)
    if kind == TGI:
        model = "tgi"  # TGI takes any other name as a LoRA adapter id
    return ServerInfo(url=config.api_base, kind=kind, model=model, models=names, **facts)


def _model_entries(listing, url: str) -> list[dict]:
    data = listing.get("data") if isinstance(listing, dict) else None
    if not isinstance(data, list):
        raise EndpointRequestError(f"{url} did not answer with an OpenAI model list")
    return [entry for entry in data if isinstance(entry, dict) and entry.get("id")]


def _names(entry: dict) -> list[str]:
    aliases = entry.get("aliases") if isinstance(entry.get("aliases"), list) else []
    return [str(entry["id"]), *(str(a) for a in aliases)]


def _choose_model(asked: str | None, names: tuple[str, ...], entries: list[dict], url: str) -> str:
    listed = ", ".join(f"'{n}'" for n in names) or "none"
    if asked:
        if asked in names:
            return asked
        raise ServedModelError(f"the server at {url} does not serve '{asked}' (it serves {listed})")
    ids = [str(e["id"]) for e in entries]
    if len(ids) == 1:
        return ids[0]
    if not ids:
        raise ServedModelError(f"the server at {url} lists no model")
    raise ServedModelError(f"the server at {url} serves several models ({listed}): name one with --served-model")


async def _identify(http: Transport, entries: list[dict]) -> tuple[str, dict]:
    """(kind, the ServerInfo fields that depend on it)."""
    first = entries[0] if entries else {}
    if isinstance(first.get("max_model_len"), int):
        kind = SGLANG if str(first.get("owned_by", "")).lower() == "sglang" else VLLM
        version = await _optional(http, "/version", "version")
        return kind, _facts(kind, first["max_model_len"], "/v1/models max_model_len", version)
    props = await _optional_json(http, "/props")
    if isinstance(props, dict) and isinstance(props.get("default_generation_settings"), dict):
        n_ctx = props["default_generation_settings"].get("n_ctx")
        slots = props.get("total_slots") if isinstance(props.get("total_slots"), int) else None
        facts = _facts(LLAMA_SERVER, n_ctx if isinstance(n_ctx, int) else None,
                       "/props default_generation_settings.n_ctx (per slot)", str(props.get("build_info", "")))
        return LLAMA_SERVER, {**facts, "slots": slots}
    info = await _optional_json(http, "/info")
    if isinstance(info, dict) and "max_total_tokens" in info:
        facts = _facts(TGI, info.get("max_total_tokens"), "/info max_total_tokens", str(info.get("version", "")))
        return TGI, {**facts, "max_input_tokens": info.get("max_input_tokens")}
    schema = await _optional_json(http, "/openapi.json")
    title = schema.get("info", {}).get("title", "") if isinstance(schema, dict) else ""
    if "llama.cpp python" in str(title).lower():
        version = str(schema["info"].get("version", ""))
        return LLAMA_CPP_PYTHON, _facts(
            LLAMA_CPP_PYTHON, None, "not reported by llama-cpp-python's server (its --n_ctx)", version
        )
    return GENERIC, _facts(GENERIC, None, "not reported by this server", "")


def _facts(kind: str, context, source: str, version: str) -> dict:
    return {
        "context": context if isinstance(context, int) and context > 0 else None,
        "context_source": source,
        "version": version,
        "token_ids": kind in _TOKEN_ID_KINDS,
        "tokenize_route": _TOKENIZE_ROUTES.get(kind, ""),
    }


async def _optional_json(http: Transport, path: str):
    """The JSON at an engine route, or None where the server has no such route (one try, errors ignored)."""
    try:
        return (await http.get(path, root=True, retry=False)).body
    except EndpointError:
        return None


async def _optional(http: Transport, path: str, key: str) -> str:
    body = await _optional_json(http, path)
    return str(body.get(key, "")) if isinstance(body, dict) else ""
