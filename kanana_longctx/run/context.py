"""What the phases of a run share: one `RunContext`, filled in as the run goes (pure).

Usage: ctx = RunContext(probe_set, options, out_dir, reporter, tokenizer, backend, rank)  # run.runner fills it

Each phase (check, open the run directory, load, loop, summarize: kanana_longctx.run.runner) reads what the
earlier ones left here and adds its own part; nothing else carries state between them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kanana_longctx.backends.base import Backend, BackendInfo, ContextLimits, DeviceFigures, LoopStats
from kanana_longctx.options import RunOptions
from kanana_longctx.probes.spec import Probe, ProbeSet
from kanana_longctx.results import RunInfo
from kanana_longctx.run.distributed import RankInfo


@dataclass
class RunContext:
    probe_set: ProbeSet
    options: RunOptions
    out_dir: Path
    reporter: Any  # run.reporting: RichReporter, NullReporter or any object with their four methods
    tokenizer: Any
    backend: Backend
    rank: RankInfo | None  # this process's rank under torchrun, None for a single process
    # check
    max_new_tokens: int = 0
    limits: ContextLimits = field(default_factory=ContextLimits)
    info: RunInfo | None = None  # run.json: the request before loading, the backend's facts after
    notes: list[str] = field(default_factory=list)  # for the summary
    # open the run directory
    done: set[str] = field(default_factory=set)  # probe_ids already in the directory (resume)
    complete: bool = False  # every probe already done: the run ends without loading weights (runner.finished)
    pending: list[Probe] = field(default_factory=list)  # what this process runs now
    # load
    backend_info: BackendInfo | None = None
    load_seconds: float = 0.0
    # loop
    stats: LoopStats | None = None
    wall_seconds: float = 0.0
    figures: DeviceFigures = field(default_factory=DeviceFigures)

    @property
    def first_rank(self) -> bool:
        """The process that writes run.json and merges (every single-process run)."""
        return self.rank is None or self.rank.rank == 0

    @property
    def data_parallel(self) -> bool:
        """Ranks that shard the probes; tensor-parallel ranks (`--tp`) run every probe together."""
        return self.rank is not None and self.options.tp <= 1
