"""HTTP to one OpenAI-compatible server: base URLs, timeouts, bounded retries with backoff, errors as domain errors.

Usage: `async with Transport(EndpointConfig("http://127.0.0.1:8080/v1")) as t: models = await t.get("/models")`

Paths starting with `/v1/...`-style OpenAI routes are given relative to the API base (`/models`,
`/completions`); engine routes outside it (`/props`, `/tokenize`, `/extras/tokenize`, `/info`) with
`root=True`. Retried, with exponential backoff (Retry-After honoured, bounded): connection errors, 429 and 5xx.
Not retried: a context refusal (`ContextOverflow`), any other 4xx (raised once), and a read timeout (a retry
would resend the whole prompt to a server that is still working on it). The HTTP client is httpx2, the
maintained successor of httpx that huggingface_hub and openai already use.
"""

from __future__ import annotations

import asyncio
import random
import time
from dataclasses import dataclass, field
from urllib.parse import urlsplit, urlunsplit

import httpx2

from kanana_longctx.endpoint.overflow import context_refusal, error_message
from kanana_longctx.errors import (
    ContextOverflow, EndpointError, EndpointRequestError, EndpointTimeout, EndpointUnreachable,
)

RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})


@dataclass(frozen=True)
class RetryPolicy:
    """At most `attempts` tries per request; the n-th retry waits base * 2**(n-1) seconds (at most `max_delay`),
    scaled by a random factor in [0.5, 1] so concurrent requests do not retry in lockstep."""

    attempts: int = 4
    base_delay: float = 0.5
    max_delay: float = 8.0

    def delay(self, retry: int, rng: random.Random, retry_after: float | None = None) -> float:
        if retry_after is not None:
            return min(self.max_delay, max(0.0, retry_after))
        return min(self.max_delay, self.base_delay * 2 ** (retry - 1)) * rng.uniform(0.5, 1.0)


@dataclass(frozen=True)
class EndpointConfig:
    """How to reach a server. `url` is the OpenAI base (`http://host:port/v1`; a URL without a path gets `/v1`)."""

    url: str
    api_key: str | None = field(default=None, repr=False)
    timeout_s: float = 600.0  # a whole request: a 128K prefill on a busy server takes minutes
    connect_timeout_s: float = 10.0
    retry: RetryPolicy = RetryPolicy()

    @property
    def api_base(self) -> str:
        return split_base_url(self.url)[0]

    @property
    def root(self) -> str:
        return split_base_url(self.url)[1]


def split_base_url(url: str) -> tuple[str, str]:
    """(OpenAI base, server root) of a URL: `http://h:p/v1` -> (`http://h:p/v1`, `http://h:p`)."""
    text = (url or "").strip()
    parts = urlsplit(text if "://" in text else "http://" + text)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise EndpointError(f"'{url}' is not an http(s) URL (e.g. http://127.0.0.1:8000/v1)")
    try:
        parts.port  # noqa: B018  (raises ValueError on a bad port)
    except ValueError:
        raise EndpointError(f"'{url}' has an invalid port") from None
    path = parts.path.rstrip("/")
    if path.endswith("/completions"):  # a pasted endpoint URL instead of the base
        path = path[: -len("/completions")].removesuffix("/chat")
    root_path = path[: -len("/v1")] if path.endswith("/v1") else path
    api_path = path if path.endswith("/v1") else path + "/v1"
    make = lambda p: urlunsplit((parts.scheme, parts.netloc, p, "", ""))  # noqa: E731
    return make(api_path), make(root_path)


class Transport:
    """One pooled async HTTP client for one server; every request goes through `request` and its retry rules."""

    def __init__(self, config: EndpointConfig, *, rng: random.Random | None = None, transport=None):
        self.config = config
        self.rng = rng or random.Random(0)
        self.api_base, self.root = config.api_base, config.root
        headers = {"Authorization": f"Bearer {config.api_key}"} if config.api_key else {}
        self._client = httpx2.AsyncClient(
            headers=headers,
            timeout=httpx2.Timeout(config.timeout_s, connect=config.connect_timeout_s),
            limits=httpx2.Limits(max_connections=64, max_keepalive_connections=64),
            transport=transport,  # tests pass an httpx2.MockTransport
            trust_env=False,  # a proxy from the environment must not sit between us and a local server
        )

    async def __aenter__(self) -> "Transport":
        return self

    async def __aexit__(self, *exc) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._client.aclose()

    def url(self, path: str, *, root: bool = False) -> str:
        return (self.root if root else self.api_base) + path

    async def get(self, path: str, *, root: bool = False, retry: bool = True) -> "Answer":
        return await self.request("GET", path, root=root, retry=retry)

    async def post(self, path: str, body: dict, *, root: bool = False, retry: bool = True) -> "Answer":
        return await self.request("POST", path, body, root=root, retry=retry)

    async def request(self, method: str, path: str, body: dict | None = None, *, root=False, retry=True) -> "Answer":
        """The server's JSON answer to one request. Raises EndpointUnreachable, EndpointTimeout, ContextOverflow or
        EndpointRequestError; `retry=False` (discovery's optional routes) makes a single attempt."""
        url = self.url(path, root=root)
        policy = self.config.retry
        attempts = policy.attempts if retry else 1
        for attempt in range(1, attempts + 1):
            t0 = time.perf_counter()
            try:
                response = await self._client.request(method, url, json=body)
            except httpx2.TimeoutException as exc:
                if isinstance(exc, (httpx2.ConnectTimeout, httpx2.PoolTimeout)) and attempt < attempts:
                    await asyncio.sleep(policy.delay(attempt, self.rng))
                    continue
                raise EndpointTimeout(
                    f"{method} {url}: no answer within {self.config.timeout_s:g} s ({type(exc).__name__}); "
                    "a longer timeout may help"
                ) from None
            except httpx2.TransportError as exc:
                if attempt < attempts:
                    await asyncio.sleep(policy.delay(attempt, self.rng))
                    continue
                tries = f" after {attempts} tries" if attempts > 1 else ""
                raise EndpointUnreachable(f"cannot reach {url}{tries}: {_reason(exc)}") from None
            seconds = time.perf_counter() - t0
            if response.status_code < 400:
                return Answer(response.status_code, _json(response), seconds, attempt)
            payload = _json(response)
            refusal = context_refusal(response.status_code, payload)
            if refusal is not None:
                raise ContextOverflow(
                    f"the server refused the request as too long for its context: {refusal.message}",
                    needed=refusal.prompt_tokens or 0, limit=refusal.limit or 0,
                )
            if response.status_code in RETRY_STATUSES and attempt < attempts:
                await asyncio.sleep(policy.delay(attempt, self.rng, _retry_after(response)))
                continue
            tries = f" (after {attempt} tries)" if attempt > 1 else ""
            raise EndpointRequestError(
                f"{method} {url}: HTTP {response.status_code}{tries}: {_one_line(error_message(payload))}",
                status=response.status_code,
            )
        raise AssertionError("unreachable")  # the loop returns or raises


@dataclass(frozen=True)
class Answer:
    status: int
    body: object  # parsed JSON (dict or list), or the text when the answer was not JSON
    seconds: float  # the successful attempt's round trip
    attempts: int


def _json(response: httpx2.Response):
    try:
        return response.json()
    except ValueError:
        return response.text


def _retry_after(response: httpx2.Response) -> float | None:
    value = response.headers.get("retry-after")
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None  # an HTTP date: fall back to our own backoff


def _reason(exc: Exception) -> str:
    text = str(exc).strip() or type(exc).__name__
    return _one_line(text)


def _one_line(text: str, limit: int = 300) -> str:
    line = " ".join(str(text).split())
    return line if len(line) <= limit else line[: limit - 1] + "…"
