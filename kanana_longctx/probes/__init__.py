"""Needle-in-a-haystack probes: haystacks, templates, grids and exact-length probe assembly (pure, no torch).

Usage: `build_probe_set(ProbeRequest.from_grid(resolve_grid("quick"), lang="ko"), tokenizer)`

Nothing here imports torch or transformers: the tokenizer is passed in.
"""

from kanana_longctx.probes.build import ProbeRequest, build_probe_set, verify_full
from kanana_longctx.probes.grid import PRESETS, Grid, parse_depths, parse_lengths, resolve_grid, spaced_depths
from kanana_longctx.probes.haystack import Haystack, builtin_root, load_haystack
from kanana_longctx.probes.spec import Probe, ProbeSet
from kanana_longctx.probes.summary import read_prompts, summarize, write_prompts

__all__ = [
    "PRESETS",
    "Grid",
    "Haystack",
    "Probe",
    "ProbeRequest",
    "ProbeSet",
    "build_probe_set",
    "builtin_root",
    "load_haystack",
    "parse_depths",
    "parse_lengths",
    "read_prompts",
    "resolve_grid",
    "spaced_depths",
    "summarize",
    "verify_full",
    "write_prompts",
]
