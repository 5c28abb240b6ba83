"""Recognise a server's "longer than my context" refusal among its error answers (pure).

Usage: `refusal = context_refusal(400, response_json_or_text)`; None when the answer is some other error.

Each engine words the refusal its own way (HTTP 400 from vLLM, SGLang, llama-server and llama-cpp-python's
server, 422 from TGI); the structured fields are used where an engine has them (llama-server's
`exceed_context_size_error` with `n_prompt_tokens`/`n_ctx`, llama-cpp-python's `context_length_exceeded`), the
message text otherwise. A refusal is never worth retrying: the same request gets the same answer.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

REFUSAL_STATUSES = frozenset({400, 413, 422})


@dataclass(frozen=True)
class ContextRefusal:
    """What a refusal says: the engine that words it so, and the numbers it gives (None where it gives none)."""

    engine: str
    message: str
    prompt_tokens: int | None = None
    limit: int | None = None


# (engine, pattern); named groups `prompt` and `limit` where the message has them. Order matters only where two
# engines share a wording (vLLM <= 0.10 and llama-cpp-python differ in "However, you" vs "however you").
_PATTERNS: tuple[tuple[str, re.Pattern], ...] = tuple(
    (engine, re.compile(pattern, re.IGNORECASE | re.DOTALL))
    for engine, pattern in (
        ("llama-server", r"request \((?P<prompt>\d+) tokens\) exceeds the available context size \((?P<limit>\d+) tokens\)"),
        ("llama_cpp.server", r"maximum context length is (?P<limit>\d+) tokens, however you requested \d+ tokens \((?P<prompt>\d+) in your prompt"),
        ("vLLM", r"maximum context length is (?P<limit>\d+) tokens\. However, you requested \d+ tokens \((?P<prompt>\d+) in the messages"),
        ("vLLM", r"maximum context length is (?P<limit>\d+) tokens\. However, your request has (?P<prompt>\d+) input tokens"),
        ("vLLM", r"maximum context length is (?P<limit>\d+) tokens and your request has (?P<prompt>\d+) input tokens"),
        ("SGLang", r"The input \((?P<prompt>\d+) tokens\) is longer than the model's context length \((?P<limit>\d+) tokens\)"),
        ("SGLang", r"exceeds the model's maximum context length of (?P<limit>\d+) tokens\. You requested a total of \d+ tokens: (?P<prompt>\d+) tokens from the input"),
        ("TGI", r"`inputs` tokens \+ `max_new_tokens` must be <= (?P<limit>\d+)\. Given: (?P<prompt>\d+) `inputs` tokens"),
        ("TGI", r"`inputs` must have less than (?P<limit>\d+) tokens\. Given: (?P<prompt>\d+)"),
        ("unknown", r"maximum context length|context length exceeded|exceeds the (?:available |maximum )?context"),
    )
)


def error_message(body) -> str:
    """The human part of an error answer: `{"error": {"message": ...}}`, `{"error": "..."}`, `{"message": ...}`,
    `{"detail": ...}` or plain text."""
    if isinstance(body, dict):
        error = body.get("error", body)
        if isinstance(error, dict):
            for key in ("message", "detail", "msg"):
                if isinstance(error.get(key), str):
                    return error[key]
            return str(error)
        if isinstance(error, str):
            return error
        if isinstance(body.get("detail"), str):
            return body["detail"]
        return str(body)
    return str(body or "")


def context_refusal(status: int, body) -> ContextRefusal | None:
    """The refusal in an error answer (`body`: the parsed JSON, or the text when it was not JSON), else None."""
    if status not in REFUSAL_STATUSES:
        return None
    message = error_message(body)
    error = body.get("error") if isinstance(body, dict) else None
    if isinstance(error, dict) and error.get("type") == "exceed_context_size_error":
        return ContextRefusal("llama-server", message, _int(error.get("n_prompt_tokens")), _int(error.get("n_ctx")))
    for engine, pattern in _PATTERNS:
        match = pattern.search(message)
        if match:
            groups = match.groupdict()
            return ContextRefusal(engine, message, _int(groups.get("prompt")), _int(groups.get("limit")))
    if isinstance(error, dict) and error.get("code") == "context_length_exceeded":
        return ContextRefusal("unknown", message)
    return None


def _int(value) -> int | None:
    try:
        return int(value) if value is not None else None
    except (TypeError, ValueError):
        return None
