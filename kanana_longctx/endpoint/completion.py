"""Send one probe to `/v1/completions`, greedily, and read what the server says it did.

Usage: `reply = await complete(http, info, probe, GenerationSettings(max_tokens=24))`

The prompt goes as token ids where the server takes them (so the server sees exactly the probe), as text where it
does not, with the text's length first counted by the server's own tokenize route. Either way the answer's
`usage.prompt_tokens` is kept beside the probe's length: a run reports what the server saw, never only what was
meant. Greedy decoding is spelled out per engine, because an unset field takes the engine's default, and those
sample (llama-server: temperature 0.8, top-k 40; llama-cpp-python: repeat penalty 1.1; vLLM: the model's
generation_config.json).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from kanana_longctx.endpoint.discovery import (
    GENERIC, LLAMA_CPP_PYTHON, LLAMA_SERVER, SGLANG, TGI, VLLM, ServerInfo,
)
from kanana_longctx.endpoint.transport import Transport
from kanana_longctx.errors import EndpointRequestError

IDS, TEXT = "ids", "text"


@dataclass(frozen=True)
class GenerationSettings:
    """The decoding a run asks for; stop strings and ids go to the servers that take them (EOS and the end-of-turn
    tokens stop every engine by themselves)."""

    max_tokens: int
    stop: tuple[str, ...] = ()
    stop_token_ids: tuple[int, ...] = ()
    seed: int = 0


@dataclass(frozen=True)
class EndpointReply:
    """One probe's answer and the server's own account of it."""

    probe_id: str
    text: str  # the generated text as the server returned it
    finish_reason: str  # "stop" | "length" | ...
    completion_tokens: int
    prompt_tokens: int | None  # usage.prompt_tokens: the length the server saw (None: not reported)
    cached_tokens: int | None  # prompt tokens served from the server's prefix cache (None: not reported)
    probe_tokens: int  # the probe's own length
    prompt_form: str  # ids | text
    tokenized_tokens: int | None = None  # text form: the server's tokenize count of the prompt, before sending
    seconds: float = 0.0  # the completion request's round trip
    attempts: int = 1

    @property
    def hit_budget(self) -> bool:
        return self.finish_reason == "length"

    @property
    def length_offset(self) -> int | None:
        """How far the server's count is from the probe's length (0: exact; None: the server gave no count)."""
        return None if self.prompt_tokens is None else self.prompt_tokens - self.probe_tokens

    @property
    def prefill_tokens(self) -> int:
        """Prompt tokens the server computed: its count less the cached ones (all of them when it says neither)."""
        seen = self.prompt_tokens if self.prompt_tokens is not None else self.probe_tokens
        return max(0, seen - (self.cached_tokens or 0))

    def to_dict(self) -> dict:
        return asdict(self)


def request_body(info: ServerInfo, probe, settings: GenerationSettings, *, max_tokens: int | None = None) -> dict:
    """The /v1/completions body for `probe` on this server (greedy, see the module docstring)."""
    body: dict = {
        "model": info.model,
        "prompt": list(probe.input_ids) if info.token_ids else probe.prompt,
        "max_tokens": settings.max_tokens if max_tokens is None else max_tokens,
        "temperature": 0.0,
        "top_p": 1.0,
        "seed": settings.seed,
        "stream": False,
    }
    if settings.stop:
        body["stop"] = list(settings.stop[:4] if info.kind == TGI else settings.stop)  # TGI takes at most 4
    if info.kind == LLAMA_SERVER:
        body.update(top_k=1, min_p=0.0, repeat_penalty=1.0, presence_penalty=0.0, frequency_penalty=0.0,
                    dry_multiplier=0.0, xtc_probability=0.0, cache_prompt=True)
    elif info.kind == LLAMA_CPP_PYTHON:
        body.update(top_k=1, min_p=0.0, repeat_penalty=1.0, presence_penalty=0.0, frequency_penalty=0.0)
    elif info.kind in (VLLM, SGLANG):
        body.update(repetition_penalty=1.0, presence_penalty=0.0, frequency_penalty=0.0, skip_special_tokens=True)
        if settings.stop_token_ids:
            body["stop_token_ids"] = list(settings.stop_token_ids)
    elif info.kind == TGI:
        body.update(repetition_penalty=1.0, frequency_penalty=0.0)
    elif info.kind == GENERIC:
        body.update(presence_penalty=0.0, frequency_penalty=0.0)
    return body


async def count_tokens(http: Transport, info: ServerInfo, text: str) -> int | None:
    """The server's token count of `text` as its completions route would tokenize it (BOS where it adds one);
    None where the server has no tokenize route."""
    route = info.tokenize_route
    if not route:
        return None
    if info.kind == LLAMA_SERVER:
        body = {"content": text, "add_special": True, "parse_special": True}
    elif info.kind == LLAMA_CPP_PYTHON:
        body = {"input": text, "model": info.model}
    elif info.kind == TGI:
        body = {"inputs": text}
    else:  # vLLM, SGLang
        body = {"model": info.model, "prompt": text, "add_special_tokens": True}
    answer = (await http.post(route, body, root=True)).body
    if isinstance(answer, list):  # TGI: one entry per token
        return len(answer)
    if isinstance(answer, dict):
        if isinstance(answer.get("count"), int):
            return answer["count"]
        if isinstance(answer.get("tokens"), list):
            return len(answer["tokens"])
    raise EndpointRequestError(f"{http.url(route, root=True)} answered without tokens: {str(answer)[:200]}")


async def complete(http: Transport, info: ServerInfo, probe, settings: GenerationSettings) -> EndpointReply:
    """Send `probe` and return the reply; errors as the transport raises them (ContextOverflow, ...)."""
    tokenized = None if info.token_ids else await count_tokens(http, info, probe.prompt)
    answer = await http.post("/completions", request_body(info, probe, settings))
    return parse_reply(answer.body, probe, info, tokenized=tokenized, seconds=answer.seconds,
                       attempts=answer.attempts, url=http.url("/completions"))


def parse_reply(body, probe, info: ServerInfo, *, tokenized=None, seconds=0.0, attempts=1, url="") -> EndpointReply:
    """An EndpointReply from a /v1/completions answer (OpenAI fields plus llama-server's `timings`)."""
    choices = body.get("choices") if isinstance(body, dict) else None
    if not choices or not isinstance(choices[0], dict):
        raise EndpointRequestError(f"{url} answered without a completion: {str(body)[:200]}")
    choice = choices[0]
    usage = body.get("usage") if isinstance(body.get("usage"), dict) else {}
    return EndpointReply(
        probe_id=probe.probe_id,
        text=str(choice.get("text") or ""),
        finish_reason=str(choice.get("finish_reason") or ""),
        completion_tokens=_count(usage.get("completion_tokens")) or 0,
        prompt_tokens=_count(usage.get("prompt_tokens")),
        cached_tokens=cached_tokens(body),
        probe_tokens=probe.n_tokens,
        prompt_form=IDS if info.token_ids else TEXT,
        tokenized_tokens=tokenized,
        seconds=round(seconds, 4),
        attempts=attempts,
    )


def cached_tokens(body: dict) -> int | None:
    """Prompt tokens the server took from its cache: `usage.prompt_tokens_details.cached_tokens` (vLLM with
    --enable-prompt-tokens-details, SGLang with --enable-cache-report, newer llama-server), else llama-server's
    `timings.cache_n`; None where the server reports neither."""
    usage = body.get("usage") if isinstance(body.get("usage"), dict) else {}
    details = usage.get("prompt_tokens_details")
    if isinstance(details, dict) and _count(details.get("cached_tokens")) is not None:
        return _count(details["cached_tokens"])
    timings = body.get("timings")
    if isinstance(timings, dict) and _count(timings.get("cache_n")) is not None:
        return _count(timings["cache_n"])
    return _count(usage.get("cached_tokens"))


def _count(value) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else None
