"""The seam between the runner and whatever produces answers: one small protocol and the records it speaks (pure).

Usage: backend = open_backend(request)  # kanana_longctx.backends.registry
       limits = backend.context(); info = backend.load(); stats = backend.run(job, sink); figures = backend.close(ran)

The runner, resume, scoring, results and the run summary only ever see these records, never which backend ran:
- `context()` is cheap (a config, a server's model list; never weights), so the run's lengths are checked before
  anything slow or destructive happens;
- `load()` does the slow part and says what it chose in one `BackendInfo` (engine, then either device, dtype,
  kernel and GPU, or an endpoint's facts; versions, notes, native and maximum context, the YaRN in force);
- `run()` turns the job's pending probes into `Generation`s, handing each finished batch to the sink (which
  scores, writes and reports them: the backend never builds a result record) and returns `LoopStats`;
- `close()` releases what `load()` took and returns what only the device can tell (`DeviceFigures`).
Optional: `preflight(longest_prompt, max_new_tokens) -> note`, called right after `context()`, for a backend whose
limit is finer than one number (a server engine's own rule, with its launch advice); it raises to refuse the run.

A backend that works on token ids decodes them itself (it owns its tokenizer use), so every backend hands back
text; one that talks to a server can send ids or text and never touch torch.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping, Protocol, Sequence

from kanana_longctx.hub import ModelSource
from kanana_longctx.options import RunOptions
from kanana_longctx.plan.flops import ModelShape
from kanana_longctx.probes.spec import Probe, ProbeSet


@dataclass(frozen=True)
class BackendRequest:
    """What a backend is opened with. `loaded`: a model built elsewhere (the benchmark's random weights, tests),
    used instead of loading `source`; `device_index`: the GPU of this process under data parallelism."""

    options: RunOptions
    source: ModelSource | None
    tokenizer: Any
    loaded: Any = None
    device_index: int | None = None


@dataclass(frozen=True)
class ContextLimits:
    """Positions a model was trained for and can address, read before anything loads. Without YaRN in force a run
    may go past `native` (that shows YaRN's effect) up to what the default YaRN factor would reach, unless
    `fixed`: then `maximum` is a hard limit whatever the YaRN settings (a server's context)."""

    native: int = 0
    maximum: int = 0
    yarn: dict | None = None  # the YaRN parameters the config carries, or None
    fixed: bool = False

    def reach(self, default_factor: float) -> int:
        """The most positions a probe plus its answer may take (0: unknown, no check)."""
        if self.yarn or self.fixed:
            return self.maximum
        return int(self.native * default_factor)


@dataclass(frozen=True)
class BackendInfo:
    """How a backend describes itself for run.json, the run's first line and its summary."""

    engine: str  # the registry name that ran: fast | hf | ...
    versions: dict = field(default_factory=dict)  # of the libraries (and server) that computed the answers
    native_context: int = 0
    max_context: int = 0
    yarn: dict | None = None  # the YaRN parameters in force, or None
    device: str = ""  # in-process backends: cpu | cuda
    dtype: str = ""
    attention: str = ""  # the kernel actually used
    gpu_name: str = ""
    endpoint: dict = field(default_factory=dict)  # serving backends: url, served model, server context, version
    notes: tuple[str, ...] = ()  # choices the user should know about (a fallback, how the model was sharded)
    headline: str = ""  # the run's first line: what runs where
    shape: ModelShape | None = None  # for the no-reuse FLOPs of the summary; None where unknown
    extra: dict = field(default_factory=dict)  # further facts for run.json's "extra" (the rotary attention factor)

    def describe(self) -> str:
        """One line for the summary: "engine fast, attention cudnn, bfloat16 on NVIDIA H200"."""
        parts = [f"engine {self.engine}"]
        if self.attention:
            parts.append(f"attention {self.attention}")
        if self.device:
            parts.append(f"{self.dtype} on {self.gpu_name or self.device}")
        if self.endpoint.get("url"):
            parts.append(f"endpoint {self.endpoint['url']}")
        return ", ".join(parts)


@dataclass(frozen=True)
class RunJob:
    """The probes a backend runs now and their answer budget (the rest of the probe set is context: the shared
    prefix, the form)."""

    probe_set: ProbeSet
    pending: tuple[Probe, ...]
    max_new_tokens: int


@dataclass(frozen=True)
class Generation:
    """One probe's answer as a backend produced it, before scoring. `text`: the decoded new tokens (special
    tokens skipped), not yet cleaned; `hit_max_new_tokens`: generation ended because the budget ran out, not at
    a stop; `extras`: backend-specific facts for this row (a server's usage, retries), written with the record."""

    probe: Probe
    text: str
    new_tokens: int
    hit_max_new_tokens: bool
    seconds: float
    prefill_tokens: int
    extras: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class LoopStats:
    """What a probe loop did: the prefill FLOPs it computed and, where it can tell them apart, where its time went
    (prefill and decode seconds, the device synchronised at every switch, and the setup before the first probe:
    planning, buffers, weight fusing; 0.0 otherwise), and the KV rows and prefill chunk it ran with (0 for a
    loop without them)."""

    computed_flops: float
    prefill_seconds: float = 0.0
    decode_seconds: float = 0.0
    setup_seconds: float = 0.0
    kv_rows: int = 0
    chunk_tokens: int = 0


@dataclass(frozen=True)
class DeviceFigures:
    """What the device measured over a run (zeros off a GPU)."""

    peak_memory_gib: float = 0.0
    matmul_tflops: float = 0.0  # the GPU's bf16 matmul rate, measured after the run (the share-of-peak yardstick)


class GenerationSink(Protocol):
    """The runner's side of `run()`: takes finished generations and notes."""

    def write(self, generations: Sequence[Generation]) -> None:
        """Score, append durably and report a finished batch (call as each batch finishes)."""

    def note(self, message: str) -> None:
        """A line for the user while the run goes (what the backend chose, what it fell back from)."""


class Backend(Protocol):
    """What the runner needs of a backend, in the order it calls it."""

    def context(self) -> ContextLimits: ...

    def load(self) -> BackendInfo: ...

    def run(self, job: RunJob, sink: GenerationSink) -> LoopStats: ...

    def close(self, ran: bool) -> DeviceFigures: ...
