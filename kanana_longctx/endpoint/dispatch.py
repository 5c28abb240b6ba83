"""Send many probes to one server: a bounded number in flight, in prefix-cache order, each reply handed over as
it finishes.

Usage: `report = send_probes(config, info, probes, settings, on_reply, shared_prefix_ids=probe_set.shared_prefix_ids)`

`on_reply(probe, reply)` runs for each finished probe, in the order they finish, before the next request is
started by that worker: a caller that appends and fsyncs a result row there loses nothing finished to Ctrl-C or
to a failing server. On the first error no new request starts; the ones in flight finish (and are handed over),
then the error is raised with how many probes had finished. Ctrl-C cancels what is in flight at once.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import Callable, Sequence

from kanana_longctx.endpoint.completion import EndpointReply, GenerationSettings, complete, parse_reply, request_body
from kanana_longctx.endpoint.discovery import ServerInfo
from kanana_longctx.endpoint.order import prefix_order, warmup_ids
from kanana_longctx.endpoint.preflight import context_advice
from kanana_longctx.endpoint.transport import EndpointConfig, Transport
from kanana_longctx.errors import ContextOverflow, EndpointError, EndpointRequestError

OnReply = Callable[[object, EndpointReply], None]


@dataclass(frozen=True)
class SendReport:
    """What a send did: requests in flight at most, whether probes went in prefix order, the warm-up (0 tokens:
    none), probes finished, and the wall time."""

    concurrency: int
    prefix_ordered: bool
    warmup_tokens: int
    warmup_seconds: float
    finished: int
    wall_seconds: float


@dataclass(frozen=True)
class _Prompt:
    """A prompt that is not a probe (the warm-up): what request_body and parse_reply read."""

    input_ids: tuple[int, ...]
    prompt: str = ""
    probe_id: str = "warmup"

    @property
    def n_tokens(self) -> int:
        return len(self.input_ids)


def send_probes(config: EndpointConfig, info: ServerInfo, probes: Sequence, settings: GenerationSettings,
                on_reply: OnReply, **options) -> SendReport:
    """Synchronous `send_probes_async` (one event loop for the whole send)."""
    return asyncio.run(send_probes_async(config, info, probes, settings, on_reply, **options))


async def send_probes_async(
    config: EndpointConfig,
    info: ServerInfo,
    probes: Sequence,
    settings: GenerationSettings,
    on_reply: OnReply,
    *,
    concurrency: int | None = None,
    prefix_ordered: bool = True,
    shared_prefix_ids: Sequence[int] = (),
    hints: Sequence = (),
    transport=None,
) -> SendReport:
    """See the module docstring. `concurrency` None: the server's default (ServerInfo.default_concurrency)."""
    width = max(1, concurrency or info.default_concurrency())
    ordered = prefix_order(probes) if prefix_ordered else list(probes)
    t0 = time.perf_counter()
    state = _State(total=len(ordered))
    async with Transport(config, transport=transport) as http:
        warm = warmup_ids(ordered, shared_prefix_ids) if width > 1 and prefix_ordered and info.token_ids else ()
        warm_seconds = await _warm_up(http, info, warm, settings) if warm and ordered else 0.0
        pending = iter(ordered)
        workers = [_worker(http, info, pending, settings, on_reply, state, hints) for _ in range(min(width, len(ordered)))]
        await asyncio.gather(*workers)
    if state.error is not None:
        raise state.error
    return SendReport(width, prefix_ordered, len(warm), round(warm_seconds, 4), state.finished,
                      round(time.perf_counter() - t0, 4))


@dataclass
class _State:
    total: int
    finished: int = 0
    error: BaseException | None = None


async def _warm_up(http: Transport, info: ServerInfo, ids: tuple[int, ...], settings: GenerationSettings) -> float:
    """One request with the bare shared prefix and a one-token answer, so that the probes sent together next
    all find it cached."""
    prompt = _Prompt(ids)
    answer = await http.post("/completions", request_body(info, prompt, settings, max_tokens=1))
    parse_reply(answer.body, prompt, info, url=http.url("/completions"))  # a malformed answer fails here, loudly
    return answer.seconds


async def _worker(http, info, pending, settings, on_reply, state: _State, hints) -> None:
    while state.error is None:
        probe = next(pending, None)
        if probe is None:
            return
        try:
            reply = await complete(http, info, probe, settings)
        except ContextOverflow as exc:
            state.error = state.error or _overflow(exc, info, probe, settings, hints)
            return
        except EndpointError as exc:
            state.error = state.error or _with_progress(exc, state)
            return
        try:
            on_reply(probe, reply)
        except BaseException as exc:  # the caller's own failure (a full disk...): stop, keep its type
            state.error = state.error or exc
            return
        state.finished += 1


def _with_progress(exc: EndpointError, state: _State) -> EndpointError:
    """The same error, saying how far the send got (the finished probes were handed over already)."""
    message = f"{exc} ({state.finished} of {state.total} probes had finished and were kept)"
    if isinstance(exc, EndpointRequestError):
        return EndpointRequestError(message, status=exc.status)
    return type(exc)(message)


def _overflow(exc: ContextOverflow, info: ServerInfo, probe, settings: GenerationSettings, hints) -> ContextOverflow:
    needed = max(exc.needed, probe.n_tokens) + settings.max_tokens
    advice = context_advice(info, needed, hints)
    return ContextOverflow(
        f"probe {probe.probe_id} ({probe.n_tokens:,} tokens): {exc}; {advice}", needed=needed, limit=exc.limit,
        hint=advice,
    )

