"""The cheap checks of a run, before anything slow or destructive (pure: no torch, no weights).

Usage: max_new = default_max_new_tokens(probe_set, tokenizer); note = check_context(limits, longest, 4.4)

What a run asked for (`yarn_request`, `grid_of`) and whether its probes fit the model (`check_context`), from the
options, the probe set and the backend's `ContextLimits` alone. The runner's first phase calls these; a stricter
validation of the options belongs here too.
"""

from __future__ import annotations

from kanana_longctx.backends.base import ContextLimits
from kanana_longctx.errors import ProbeError
from kanana_longctx.options import RunOptions
from kanana_longctx.probes.spec import ProbeSet


def yarn_request(options: RunOptions) -> dict | str:
    """How YaRN was asked for: explicit parameters, forced off, or as the model's config says. Against an endpoint
    the server applies YaRN and `--yarn` declares what it was launched with: only the numbers the flags give."""
    if options.yarn is True and options.endpoint:
        return {"factor": options.yarn_factor, "original_max_position_embeddings": options.yarn_original,
                "as_served": True}
    if options.yarn is True:
        return {
            "factor": options.yarn_factor,
            "original_max_position_embeddings": options.yarn_original,
            "beta_fast": options.yarn_beta_fast,
            "beta_slow": options.yarn_beta_slow,
        }
    return "off" if options.yarn is False else "config"


def grid_of(probe_set: ProbeSet) -> dict:
    """The grid as run.json records it: lengths, depths, probes, and the task that fills it (part of the run's
    fingerprint, so that a resumed run never mixes the rows of two tasks)."""
    return {
        "lengths": sorted({p.length for p in probe_set.probes}),
        "depths": sorted({p.depth for p in probe_set.probes}),
        "probes": len(probe_set.probes),
        "task": probe_set.task,
        "distractors": probe_set.distractors,
        "values": probe_set.values,
        "queries": probe_set.queries,
        "repeats": probe_set.repeats,
    }


def default_max_new_tokens(probe_set: ProbeSet, tokenizer) -> int:
    """The answer budget of the probe set (kanana_longctx.probes.answer): a right answer's tokens in the model's
    tokenizer plus room for phrasing; computed here for a probe set built without one."""
    from kanana_longctx.probes.answer import answer_budget

    return probe_set.max_new_tokens or answer_budget(probe_set.probes, tokenizer)


def check_context(limits: ContextLimits, longest: int, yarn_factor: float) -> str:
    """Refuse probes (plus their answers) of `longest` positions past what the model addresses; return the note of
    a run past the native context without YaRN ("" otherwise). Without YaRN a model can be run past its native
    context (that is what shows YaRN's effect), but not past what even the default YaRN factor would reach."""
    reach = limits.reach(yarn_factor)
    if reach and longest > reach:
        what = " with YaRN" if limits.yarn else "" if limits.fixed else f" even with YaRN x{yarn_factor:g}"
        raise ProbeError(f"probes need {longest:,} positions; the model addresses {reach:,}{what}")
    if limits.native and longest > limits.native and not limits.yarn and not limits.fixed:
        return f"lengths exceed the model's native context of {limits.native:,} tokens without YaRN"
    return ""
