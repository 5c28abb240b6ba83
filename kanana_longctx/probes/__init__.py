"""Needle-in-a-haystack probes: haystacks, templates, grids and exact-length probe assembly (pure, no torch).

Usage: `build_probe_set(ProbeRequest.from_grid(resolve_grid("quick"), lang="ko", task="multikey"), tokenizer)`

Nothing here imports torch or transformers: the tokenizer is passed in.
"""

from kanana_longctx.probes.answer import answer_budget
from kanana_longctx.probes.build import ProbeRequest, build_probe_set, verify_full
from kanana_longctx.probes.grid import PRESETS, Grid, parse_depths, parse_lengths, resolve_grid, spaced_depths
from kanana_longctx.probes.haystack import Haystack, builtin_root, load_haystack
from kanana_longctx.probes.spec import Probe, ProbeSet
from kanana_longctx.probes.summary import read_prompts, summarize, write_prompts
from kanana_longctx.probes.tasks import TASKS, TaskSpec, resolve_task

__all__ = [
    "PRESETS",
    "TASKS",
    "Grid",
    "Haystack",
    "Probe",
    "ProbeRequest",
    "ProbeSet",
    "TaskSpec",
    "answer_budget",
    "build_probe_set",
    "builtin_root",
    "load_haystack",
    "parse_depths",
    "parse_lengths",
    "read_prompts",
    "resolve_grid",
    "resolve_task",
    "spaced_depths",
    "summarize",
    "verify_full",
    "write_prompts",
]
