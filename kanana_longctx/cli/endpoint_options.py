"""`niah --endpoint URL`'s options and their checks, kept beside niah_cmd.py so that the command only names them.

Usage: endpoint_checks(ctx, endpoint, concurrency=concurrency); model_given(ctx)

With an endpoint the server runs the model, so the options that choose how this process would run it (device,
dtype, attention kernel, engine, batch size, memory cap, GPUs) make no sense: given explicitly they are refused
with one line instead of being silently ignored. The endpoint-only options are refused without an endpoint.
"""

from __future__ import annotations

from typing import Annotated, Optional

import typer

from kanana_longctx.errors import BadInput

_SERVE = "Serving endpoint"

EndpointOpt = Annotated[
    Optional[str],
    typer.Option(
        "--endpoint",
        help="OpenAI-compatible base URL (http://127.0.0.1:8000/v1): send the probes to that server "
        "(vLLM, SGLang, llama-server, llama-cpp-python, TGI) instead of loading the model.",
        rich_help_panel=_SERVE,
        show_default=False,
    ),
]
ServedModelOpt = Annotated[
    Optional[str],
    typer.Option("--served-model", help="Model name to send \\[default: the one /v1/models lists].",
                 rich_help_panel=_SERVE, show_default=False),
]
ApiKeyEnvOpt = Annotated[
    Optional[str],
    typer.Option("--api-key-env", metavar="VAR", help="Environment variable that holds the API key (never stored).",
                 rich_help_panel=_SERVE, show_default=False),
]
ConcurrencyOpt = Annotated[
    Optional[int],
    typer.Option("--concurrency", help="Requests in flight \\[default: 1 for llama-cpp-python, the slots of "
                 "llama-server, else 4].", rich_help_panel=_SERVE, show_default=False),
]
PrefixOrderOpt = Annotated[
    bool,
    typer.Option("--prefix-order/--no-prefix-order", help="Send probes that share a haystack prefix back to back "
                 "(the server's prefix cache serves it).", rich_help_panel=_SERVE),
]

# niah parameters that choose how this process runs the model, by their flag.
LOCAL_ONLY = {
    "device": "--device", "dtype": "--dtype", "attn": "--attn", "engine": "--engine", "batch_size": "--batch-size",
    "max_memory": "--max-memory", "gpus": "--gpus", "tp": "--tp",
}
ENDPOINT_ONLY = {
    "served_model": "--served-model", "api_key_env": "--api-key-env", "concurrency": "--concurrency",
    "prefix_order": "--prefix-order/--no-prefix-order",
}


def _given(ctx: typer.Context, names: dict[str, str]) -> list[str]:
    """The flags among `names` that were given on the command line (or through the environment), not defaulted."""
    given = ("COMMANDLINE", "ENVIRONMENT")
    return [flag for name, flag in names.items() if getattr(ctx.get_parameter_source(name), "name", "") in given]


def model_given(ctx: typer.Context) -> bool:
    """Whether -m/--model was given (without it an endpoint run takes the tokenizer the server names)."""
    return bool(_given(ctx, {"model": "--model"}))


def endpoint_checks(ctx: typer.Context, endpoint: str | None, *, concurrency: int | None) -> None:
    """Refuse the options that make no sense with (or without) an endpoint; validate --concurrency."""
    if endpoint is None:
        stray = _given(ctx, ENDPOINT_ONLY)
        if stray:
            raise BadInput(f"{', '.join(stray)} only {'applies' if len(stray) == 1 else 'apply'} with --endpoint")
        return
    if not endpoint.strip():
        raise BadInput("--endpoint needs a URL (e.g. http://127.0.0.1:8000/v1)")
    local = _given(ctx, LOCAL_ONLY)
    if local:
        raise BadInput(f"{', '.join(local)} cannot be used with --endpoint: the server runs the model")
    if concurrency is not None and concurrency < 1:
        raise BadInput(f"--concurrency must be at least 1, got {concurrency}")
