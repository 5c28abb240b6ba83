"""The cheap checks of a run, before anything slow or destructive (pure: no torch, no weights).

Usage: validate_options(options); max_new = default_max_new_tokens(probe_set, tokenizer)
       note = check_context(limits, longest, 4.4)

Every option's name and range (`validate_options`), what a run asked for (`yarn_request`, `grid_of`) and whether
its probes fit the model (`check_context`), from the options, the probe set and the backend's `ContextLimits`
alone. The CLI calls `validate_options` before it loads a tokenizer, the runner's first phase again (library
callers), so that a typo never costs a result: nothing is deleted, written or loaded before these pass.
"""

from __future__ import annotations

import math

from kanana_longctx.backends.base import ContextLimits
from kanana_longctx.errors import BadInput, ProbeError
from kanana_longctx.limits import (
    MAX_BATCH_SIZE, MAX_LENGTH, MAX_LIMIT, MAX_MEMORY_GIB, MAX_NEW_TOKENS, MAX_PROCESSES,
)
from kanana_longctx.options import RunOptions
from kanana_longctx.probes.spec import ProbeSet

# Common spellings of a dtype that --dtype does not take, with the name it does.
DTYPE_SPELLINGS = {"bf16": "bfloat16", "fp16": "float16", "half": "float16", "fp32": "float32", "float": "float32"}


def _choice(value: str, choices: tuple[str, ...], flag: str, hint: str = "") -> None:
    if value not in choices:
        raise BadInput(f"unknown {flag} '{value}' (choose from {', '.join(choices)}){hint}")


def _bounded(value, low, high, flag: str) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or not (
        low <= value <= high
    ):
        raise BadInput(f"{flag} must be between {low:,} and {high:,}, got {value!r}")


def validate_options(options: RunOptions, *, gpus: int = 0) -> None:
    """Refuse an option a run cannot use, with the choices or the range (BadInput: one line, exit 2). The ranges
    are checked here rather than as typer ranges so that a bad number is one line like every other bad input."""
    from kanana_longctx.backends.registry import engine_choices
    from kanana_longctx.kernels.choice import ATTN_CHOICES, DEVICE_CHOICES, DTYPE_CHOICES
    from kanana_longctx.yarn.params import MAX_FACTOR

    _choice(options.device, DEVICE_CHOICES, "--device")
    spelled = DTYPE_SPELLINGS.get(options.dtype.lower())
    _choice(options.dtype, DTYPE_CHOICES, "--dtype", f"; {options.dtype} is spelled {spelled}" if spelled else "")
    _choice(options.attn, ATTN_CHOICES, "--attn")
    _choice(options.engine, engine_choices(), "--engine")
    _bounded(options.batch_size, 0, MAX_BATCH_SIZE, "--batch-size")
    _bounded(options.max_new_tokens, 0, MAX_NEW_TOKENS, "--max-new-tokens")
    _bounded(options.limit, 0, MAX_LIMIT, "--limit")
    _bounded(options.tp, 0, MAX_PROCESSES, "--tp")
    _bounded(gpus, 0, MAX_PROCESSES, "--gpus")
    _bounded(options.max_memory_gib, 0, MAX_MEMORY_GIB, "--max-memory")
    _bounded(options.yarn_factor, 1, MAX_FACTOR, "--yarn-factor")  # the reach of a run without YaRN uses it too
    if options.yarn_original is not None:
        _bounded(options.yarn_original, 1, MAX_LENGTH, "--yarn-original")
    if options.yarn is True:
        options.yarn_params()  # every YaRN number (factor > 1, betas, original) as `config --yarn` checks them


def yarn_request(options: RunOptions) -> dict | str:
    """How YaRN was asked for: a recipe and the numbers given over it (the rest are the recipe's), forced off, or
    as the model's config says. Against an endpoint the server applies YaRN and `--yarn` declares what it was
    launched with: only the numbers the flags give."""
    if options.yarn is True and options.endpoint:
        return {"factor": options.yarn_factor, "original_max_position_embeddings": options.yarn_original,
                "as_served": True}
    if options.yarn is True:
        return {
            "recipe": options.yarn_recipe,
            "given": list(options.yarn_numbers()),
            "factor": options.yarn_factor,
            "original_max_position_embeddings": options.yarn_original,  # None: the model's native (runner fills)
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
