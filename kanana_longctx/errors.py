"""Domain exceptions. The CLI maps them to one clean line on stderr and an exit code; library code only raises.

Exit codes: 2 for bad input (the user must change something), 1 for a failed check or run (the tool worked, the
answer is "no"), 130 for Ctrl-C. A traceback is shown only when KANANA_LONGCTX_DEBUG=1.
"""

from __future__ import annotations


class KananaError(Exception):
    """Base class: anything the user should see as one line."""

    exit_code = 2


class BadInput(KananaError):
    """The user's input (path, option, file content) cannot be used. Nothing was written."""

    exit_code = 2


class ConfigError(BadInput):
    """A config.json that cannot be read, parsed or patched."""


class ModelNotFound(BadInput):
    """A model path, alias or hub id that does not resolve to local files."""


class HaystackError(BadInput):
    """A haystack source that is missing, empty or not UTF-8."""


class ProbeError(BadInput):
    """A probe that cannot be built as asked (length too small for the template, depth out of range, ...)."""


class ResultsError(BadInput):
    """A results file or run directory that cannot be used (missing, empty, a different configuration)."""


class CheckFailed(KananaError):
    """A verification ran and its answer is no (e.g. YaRN not really applied)."""

    exit_code = 1


class DeviceError(BadInput):
    """The requested device, dtype or attention kernel is not available here."""


def one_line(exc: BaseException, limit: int = 300) -> str:
    """A library exception's text on one line (transformers' validation errors span several), cut at `limit`."""
    text = " ".join(str(exc).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def json_error_text(name: object, exc, line: int | None = None) -> str:
    """A json.JSONDecodeError as one line that names the file, the place and what is wrong, in json's own words
    tidied ('unterminated string', not 'Unterminated string starting at' followed by our 'at line'):
    'FILE: invalid JSON at line 14, column 3: unterminated string'. `line`: the file's line number where the text
    parsed was one line of a JSONL file."""
    message = exc.msg
    for tail in (" starting at", " at"):  # "Unterminated string starting at", "Invalid \escape at"
        if message.endswith(tail):
            message = message[: -len(tail)]
            break
    message = message[:1].lower() + message[1:]
    return f"{name}: invalid JSON at line {exc.lineno if line is None else line}, column {exc.colno}: {message}"


class EndpointError(KananaError):
    """An OpenAI-compatible server that cannot be used as asked, or that failed: unreachable, a model it does not
    serve, a refused or failed request. Exit 2: the user must change the URL, the server or the run."""

    exit_code = 2


class EndpointUnreachable(EndpointError):
    """Nothing answers at the URL (connection refused, unknown host, the server went away mid-run)."""


class ServedModelError(EndpointError):
    """The server does not serve the model asked for, or serves several and none was named."""


class ContextTooSmall(EndpointError):
    """The server's context cannot hold the longest probe plus its answer (found before anything was sent)."""

    def __init__(self, message: str, *, needed: int = 0, limit: int = 0, hint: str = ""):
        super().__init__(message)
        self.needed, self.limit, self.hint = needed, limit, hint


class ContextOverflow(ContextTooSmall):
    """The server refused a request as longer than its context (its 400/422 answer, recognised; never retried)."""


class EndpointRequestError(EndpointError):
    """The server answered a request with an error (after the retries that apply), or with an unusable answer."""

    def __init__(self, message: str, *, status: int = 0):
        super().__init__(message)
        self.status = status


class EndpointTimeout(EndpointError):
    """A request got no answer within the timeout (not retried: a retry would resend the whole prompt)."""
