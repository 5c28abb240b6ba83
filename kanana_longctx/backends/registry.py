"""Which backend runs a probe set: one table from `--engine` names to the classes that implement them (pure: a
backend module is imported only when it is chosen).

Usage: backend = open_backend(BackendRequest(options, source, tokenizer))  # options.engine: auto | fast | reuse | hf

Adding a backend is one module and one line here. The module defines a class with the methods of
`kanana_longctx.backends.base.Backend`; the line names it:
- `local=True`: it runs on the in-process transformers model (a subclass of backends.local.LocalBackend, built
  with the shared LocalModel and telling by `supports(loaded, options)` whether it can run that model). Under
  `--engine auto` the first local backend in this table that supports the loaded model runs.
- `local=False`: it brings its own connection (a serving endpoint) and is built with the BackendRequest. Under
  `--engine auto` it runs when its `claims(options)` says the options ask for it (an endpoint URL given),
  before any local one is considered.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass

from kanana_longctx.backends.base import Backend, BackendRequest
from kanana_longctx.errors import BadInput


@dataclass(frozen=True)
class BackendEntry:
    target: str  # "package.module:ClassName"
    local: bool = True


BACKENDS: dict[str, BackendEntry] = {
    "fast": BackendEntry("kanana_longctx.backends.fast:FastBackend"),
    "reuse": BackendEntry("kanana_longctx.backends.reuse:ReuseBackend"),
    "hf": BackendEntry("kanana_longctx.backends.hf:PlainBackend"),
    "endpoint": BackendEntry("kanana_longctx.backends.endpoint:EndpointBackend", local=False),
}


def engine_choices() -> tuple[str, ...]:
    """What `--engine` accepts."""
    return ("auto", *BACKENDS)


def backend_class(name: str) -> type:
    module, _, cls = BACKENDS[name].target.partition(":")
    return getattr(importlib.import_module(module), cls)


def open_backend(request: BackendRequest) -> Backend:
    """The backend `request.options.engine` names, opened (nothing loaded yet: `context()` is the next call)."""
    name = request.options.engine
    if name != "auto" and name not in BACKENDS:
        raise BadInput(f"unknown engine '{name}' (choose from {', '.join(engine_choices())})")
    if name == "auto":
        for other, entry in BACKENDS.items():
            if not entry.local and backend_class(other).claims(request.options):
                return backend_class(other)(request)
    elif not BACKENDS[name].local:
        return backend_class(name)(request)
    from kanana_longctx.backends.local import AutoLocalBackend, LocalModel

    model = LocalModel(request)
    if name != "auto":
        return backend_class(name)(model)
    return AutoLocalBackend(model, [backend_class(other) for other, entry in BACKENDS.items() if entry.local])
