"""A serving endpoint as a backend: the probes go to an OpenAI-compatible server (kanana_longctx.endpoint) instead
of an in-process model, and come back as Generations like any other backend's (pure: no torch).

Usage: kanana-longctx niah -m MODEL --endpoint http://127.0.0.1:8000/v1 --out runs/served
       backend = EndpointBackend(BackendRequest(RunOptions(endpoint=url), source, tokenizer))

`context()` is discovery (one GET of the model list, then the engine's own routes): the server's context is a hard
limit (`ContextLimits.fixed`). `preflight()` applies the engine's own rule (prompt + answer against its context)
before the run directory is touched, with the launch command `config --check` prints for this model as the
advice. The probes are built locally with the served model's tokenizer (chat template included), so the ids sent
are the probe; a server that takes text only counts it with its own tokenize route. Each reply is written as it
arrives (one fsynced row), with the server's prompt count beside the probe's length: a run says what the server
saw. Decoding follows the in-process rules: greedy, the same answer budget, EOS and end-of-turn tokens stop, and a
retform answer ends at its first line break after some content (cut locally, as in-process).
"""

from __future__ import annotations

import os
from dataclasses import replace
from typing import Sequence

from kanana_longctx.backends.base import (
    BackendInfo, BackendRequest, ContextLimits, DeviceFigures, Generation, GenerationSink, LoopStats, RunJob,
)
from kanana_longctx.errors import BadInput, ModelNotFound

ENGINE = "endpoint"
# End-of-turn tokens of common chat templates (as backends.local.STOP_TOKENS: that module imports torch helpers).
STOP_TOKENS = ("<|im_end|>", "<|eot_id|>", "<|end_of_text|>", "</s>")


def endpoint_config(options, retry=None):
    """The EndpointConfig of a run: the URL and the API key read from the environment variable named by
    `--api-key-env` (the key itself is never stored); `retry` a RetryPolicy (None: the client's default)."""
    from kanana_longctx.endpoint import EndpointConfig, RetryPolicy

    key = None
    if options.api_key_env:
        key = os.environ.get(options.api_key_env)
        if not key:
            raise BadInput(f"--api-key-env {options.api_key_env}: that environment variable is not set or empty")
    return EndpointConfig(options.endpoint, api_key=key, retry=retry or RetryPolicy())


def served_tokenizer_model(options) -> str:
    """The tokenizer for probes sent to the server when `-m` was not given: the served model's name, where it
    resolves like `-m` would (a local path the server was started with, a hub id in the local cache)."""
    from kanana_longctx.endpoint import discover
    from kanana_longctx.hub import resolve_model

    config = endpoint_config(options, EndpointBackend.retry)
    info = discover(config, options.served_model, transport=EndpointBackend.transport)
    try:
        resolve_model(info.model)
    except ModelNotFound:
        raise BadInput(
            f"the server serves '{info.model}', which is not a local model or a hub id in the local cache: give the "
            "served model's tokenizer with -m (its directory, .gguf file or hub id)"
        ) from None
    return info.model


def stop_ids(tokenizer) -> tuple[int, ...]:
    """EOS and the end-of-turn tokens the vocabulary has (what stops in-process decoding), for the engines that
    take stop ids (vLLM, SGLang); the others stop at their own end-of-generation tokens."""
    ids: set[int] = set()
    eos = getattr(tokenizer, "eos_token_id", None)
    if isinstance(eos, int):
        ids.add(eos)
    for token in STOP_TOKENS:
        tid = tokenizer.convert_tokens_to_ids(token)
        if isinstance(tid, int) and tid >= 0 and tid != tokenizer.unk_token_id:
            ids.add(tid)
    return tuple(sorted(ids))


def model_config(options, source):
    """(the transformers config of `-m`, the YaRN it carries) for the hints and run.json; (None, None) where it
    cannot be read (the probes need only the tokenizer)."""
    from kanana_longctx.backends.local import load_config
    from kanana_longctx.errors import KananaError

    try:
        return load_config(source, replace(options, yarn=None))
    except (KananaError, ValueError, OSError):
        return None, None


def serving_hints_for(options, config) -> list:
    """What `config --check` prints for this model (kanana_longctx.yarn.serving), for the pre-flight's advice:
    with the declared --yarn numbers, else the recipe `config --yarn` would choose for the model's config; none
    where there is no config to choose from."""
    from kanana_longctx.errors import KananaError
    from kanana_longctx.yarn.serving import serving_hints

    try:
        if options.yarn:
            params = options.yarn_params()
        elif config is not None:
            from kanana_longctx.yarn.recipes import recipe_for

            params = recipe_for(config.to_dict()).params
        else:
            return []
    except (KananaError, ValueError, TypeError, AttributeError):
        return []
    architecture = (getattr(config, "architectures", None) or [None])[0] if config is not None else None
    return serving_hints(options.model, params, architecture=architecture)


def yarn_as_served(options, config_yarn: dict | None = None) -> str:
    """How run.json's YaRN came about: the server applies YaRN, the client only records what it was told."""
    if options.yarn is True:
        return "as served: declared with --yarn (the server's launch flags or config must match)"
    if options.yarn is False:
        return "as served: declared off with --no-yarn"
    if config_yarn:
        return f"as served: the model config (-m) has YaRN x{config_yarn.get('factor')}"
    return "as served: not declared (--yarn declares the server's; the -m config has none)"


class EndpointBackend:
    """The registry's `endpoint` backend (local=False): claimed under `--engine auto` by an `--endpoint` URL."""

    name = ENGINE
    transport = None  # an httpx2 transport for every request (tests set an httpx2.MockTransport); None: the network
    retry = None  # an endpoint.RetryPolicy (tests make it quick); None: the client's default

    def __init__(self, request: BackendRequest):
        if not request.options.endpoint:
            raise BadInput("--engine endpoint needs --endpoint URL")
        self.request = request
        self.options = request.options
        self.config = endpoint_config(self.options, self.retry)
        self.info = None  # endpoint.ServerInfo, from context()
        self.hints: list = []
        self.config_yarn: dict | None = None  # the YaRN of the -m config, from context()

    @staticmethod
    def claims(options) -> bool:
        return bool(getattr(options, "endpoint", None))

    def context(self) -> ContextLimits:
        from kanana_longctx.endpoint import discover

        self.info = discover(self.config, self.options.served_model, transport=self.transport)
        config, yarn = model_config(self.options, self.request.source) if self.request.source else (None, None)
        self.hints = serving_hints_for(self.options, config)
        self.config_yarn = yarn
        return ContextLimits(maximum=self.info.context or 0, yarn=yarn, fixed=True)

    def preflight(self, longest_prompt: int, max_new_tokens: int) -> str:
        """The engine's own rule for the longest probe and its answer (raises ContextTooSmall: nothing was sent)."""
        from kanana_longctx.endpoint import check_context

        return check_context(self.info, longest_prompt, max_new_tokens, self.hints)

    def load(self) -> BackendInfo:
        import httpx2

        info, yarn = self.info, yarn_as_served(self.options, self.config_yarn)
        concurrency = self.options.concurrency or info.default_concurrency()
        endpoint = {
            **info.to_dict(),
            "served_model": info.model,
            "server_context": info.context,
            "concurrency": concurrency,
            "prefix_order": self.options.prefix_order,
            "api_key_env": self.options.api_key_env or "",
            "yarn": yarn,
        }
        context = f"context {info.context:,}" if info.context else f"context {info.context_source}"
        server = f"{info.kind} {info.version}".strip()
        headline = (
            f"endpoint {info.url} ({server}), model {info.model}, {context}, "
            f"{'token-id' if info.token_ids else 'text'} prompts, {concurrency} in flight, prefix order "
            f"{'on' if self.options.prefix_order else 'off'}, YaRN {yarn}"
        )
        return BackendInfo(
            engine=ENGINE,
            versions={"server": server, "httpx2": httpx2.__version__},
            max_context=info.context or 0,
            endpoint=endpoint,
            headline=headline,
        )

    def run(self, job: RunJob, sink: GenerationSink) -> LoopStats:
        from kanana_longctx.endpoint import GenerationSettings, send_probes

        settings = GenerationSettings(max_tokens=job.max_new_tokens, stop_token_ids=stop_ids(self.request.tokenizer))
        tally = _Tally()

        def on_reply(probe, reply) -> None:
            sink.write([generation_of(probe, reply)])
            tally.add(reply)

        if job.pending:
            report = send_probes(
                self.config, self.info, job.pending, settings, on_reply,
                concurrency=self.options.concurrency or None, prefix_ordered=self.options.prefix_order,
                shared_prefix_ids=job.probe_set.shared_prefix_ids, hints=self.hints, transport=self.transport,
            )
            for line in tally.notes(report):
                sink.note(line)
        return LoopStats(computed_flops=0.0)

    def close(self, ran: bool) -> DeviceFigures:
        return DeviceFigures()


def generation_of(probe, reply) -> Generation:
    """A server's reply as a Generation, with the server's own account of the row in `extras`."""
    text = reply.text
    ended_line = probe.form == "retform" and "\n" in text.lstrip()  # in-process decoding stops there
    return Generation(
        probe=probe,
        text=text,
        new_tokens=reply.completion_tokens,
        hit_max_new_tokens=reply.hit_budget and not ended_line,
        seconds=reply.seconds,
        prefill_tokens=reply.prefill_tokens,
        extras={
            "server_prompt_tokens": reply.prompt_tokens,
            "length_offset": reply.length_offset,
            "cached_tokens": reply.cached_tokens,
            "prompt_form": reply.prompt_form,
            "tokenized_tokens": reply.tokenized_tokens,
            "finish_reason": reply.finish_reason,
            "attempts": reply.attempts,
        },
    )


class _Tally:
    """What the replies of one send add up to, for the notes at its end."""

    def __init__(self):
        self.replies = 0
        self.prompt_tokens = 0
        self.cached = 0
        self.uncounted = 0
        self.offsets: list[int] = []

    def add(self, reply) -> None:
        self.replies += 1
        self.prompt_tokens += reply.prompt_tokens or 0
        self.cached += reply.cached_tokens or 0
        if reply.length_offset is None:
            self.uncounted += 1
        elif reply.length_offset:
            self.offsets.append(reply.length_offset)

    def notes(self, report) -> Sequence[str]:
        lines = [
            f"server: {self.replies} replies, {self.prompt_tokens:,} prompt tokens counted, {self.cached:,} from its "
            f"prefix cache; {report.concurrency} in flight, prefix order {'on' if report.prefix_ordered else 'off'}"
            + (f", warm-up {report.warmup_tokens:,} tokens" if report.warmup_tokens else "")
            + f", {report.wall_seconds:.1f} s"
        ]
        if self.offsets:
            lines.append(
                f"[yellow]warning:[/] the server counted {len(self.offsets)} prompts at a length other than the "
                f"probe's (off by {min(self.offsets):+d} to {max(self.offsets):+d} tokens); results.jsonl records "
                "both (extra.server_prompt_tokens)"
            )
        if self.uncounted:
            lines.append(f"[yellow]warning:[/] the server reported no prompt count for {self.uncounted} probes")
        return lines
