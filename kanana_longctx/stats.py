"""Honest numbers for NIAH grids: intervals for a proportion or a mean, and paired tests for two runs (pure: scipy).

Usage: wilson_interval(7, 10); mcnemar_exact(b=1, c=8); paired_test(a_scores, b_scores, rng=np.random.default_rng(0))

A probe scored 0 or 1 is a Bernoulli trial: its cell's success rate gets a Wilson interval, and two runs scored on
the same probes are compared with the exact McNemar test (a two-sided binomial test on the discordant pairs).
Fractional scores (a share of values recalled, a judge's grade) get a sign-flip permutation test on the paired
differences and a bootstrap interval for their mean. Randomness is always passed in as a numpy Generator.
"""

from __future__ import annotations

import inspect
import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np
from scipy import stats

ALPHA = 0.05
CONFIDENCE = 0.95
# Resampling budgets: exact enumeration below 2**13 sign patterns, Monte Carlo above; batches bound the memory of
# a whole-grid test (7,200 pairs x 2,000 resamples per batch is ~115 MB of float64).
PERMUTATIONS = 9999
BOOTSTRAPS = 4999
_BATCH = 2000


@dataclass(frozen=True)
class Interval:
    low: float
    high: float

    @property
    def half_width(self) -> float:
        return (self.high - self.low) / 2.0

    @classmethod
    def missing(cls) -> "Interval":
        return cls(math.nan, math.nan)


def _rng_kwargs(func, rng: np.random.Generator | None) -> dict:
    # scipy 1.15 renamed `random_state` to `rng`; both take a Generator.
    if rng is None:
        return {}
    return {"rng": rng} if "rng" in inspect.signature(func).parameters else {"random_state": rng}


def wilson_interval(successes: int, n: int, confidence: float = CONFIDENCE) -> Interval:
    """Wilson score interval for `successes` out of `n` Bernoulli trials (NaN bounds when n is 0)."""
    if n <= 0:
        return Interval.missing()
    if not 0 <= successes <= n:
        raise ValueError(f"{successes} successes out of {n} trials")
    ci = stats.binomtest(int(successes), int(n)).proportion_ci(confidence_level=confidence, method="wilson")
    return Interval(float(ci.low), float(ci.high))


def mcnemar_exact(b: int, c: int) -> float:
    """Two-sided exact McNemar p-value from the discordant counts: b pairs where only A was right, c where only B
    was. 1.0 when there is no discordant pair (nothing speaks for either run)."""
    if b < 0 or c < 0:
        raise ValueError(f"discordant counts must be non-negative, got b={b}, c={c}")
    if b + c == 0:
        return 1.0
    return float(stats.binomtest(int(min(b, c)), int(b + c), 0.5).pvalue)


def smallest_exact_p(n_pairs: int) -> float:
    """The smallest two-sided p-value an exact paired test (McNemar or sign flip) can give with `n_pairs` pairs:
    every pair discordant in one direction, 2 * 0.5**n. With 3 pairs that is 0.25: no cell of 3 repeats can ever
    reach 0.05, whatever the data."""
    return min(1.0, 2.0 * 0.5 ** max(n_pairs, 0))


def min_pairs_for(alpha: float = ALPHA) -> int:
    """Fewest pairs with which an exact paired test can reach p < alpha (6 for 0.05)."""
    n = 1
    while smallest_exact_p(n) >= alpha:
        n += 1
    return n


def _mean_statistic(x, axis=-1):
    return np.mean(x, axis=axis)


def sign_flip_test(differences: Sequence[float], rng: np.random.Generator, n_resamples: int = PERMUTATIONS) -> float:
    """Two-sided paired permutation test of mean(differences) = 0: under the null each pair's difference is as likely
    negated, so its sign is flipped at random (exactly enumerated when 2**n <= n_resamples)."""
    d = np.asarray(differences, dtype=float)
    if d.size == 0 or not np.any(d):
        return 1.0
    result = stats.permutation_test(
        (d,), _mean_statistic, permutation_type="samples", vectorized=True, n_resamples=n_resamples,
        batch=_BATCH, **_rng_kwargs(stats.permutation_test, rng),
    )
    return float(min(1.0, result.pvalue))


def bootstrap_mean_interval(
    values: Sequence[float], rng: np.random.Generator, confidence: float = CONFIDENCE, n_resamples: int = BOOTSTRAPS
) -> Interval:
    """Bootstrap (BCa) interval for the mean of `values`; a degenerate sample (all equal) is its own interval."""
    x = np.asarray(values, dtype=float)
    if x.size == 0:
        return Interval.missing()
    if np.all(x == x[0]):
        return Interval(float(x[0]), float(x[0]))
    kwargs = dict(
        n_resamples=n_resamples, batch=_BATCH, vectorized=True, confidence_level=confidence,
        **_rng_kwargs(stats.bootstrap, rng),
    )
    with np.errstate(all="ignore"):
        ci = stats.bootstrap((x,), _mean_statistic, method="BCa", **kwargs).confidence_interval
        if not (math.isfinite(ci.low) and math.isfinite(ci.high)):  # BCa needs some spread in the jackknife
            ci = stats.bootstrap((x,), _mean_statistic, method="percentile", **kwargs).confidence_interval
    return Interval(float(ci.low), float(ci.high))


def benjamini_hochberg(p_values: Sequence[float]) -> np.ndarray:
    """Benjamini-Hochberg adjusted p-values (false discovery rate), in the input order."""
    p = np.asarray(p_values, dtype=float)
    if p.size == 0:
        return p
    return stats.false_discovery_control(p, method="bh")


@dataclass(frozen=True)
class PairedResult:
    """Run B against run A on the same probes. Differences are B - A, on scores in [0, 1]."""

    test: str  # "McNemar exact" | "sign-flip permutation"
    n_pairs: int
    p_value: float
    mean_difference: float
    interval: Interval  # 95% bootstrap interval of the mean difference
    a_only: int  # binary: pairs only A got right (McNemar's b); fractional: pairs where A scored higher
    b_only: int  # binary: pairs only B got right (McNemar's c); fractional: pairs where B scored higher

    @property
    def can_reach_alpha(self) -> bool:
        return smallest_exact_p(self.n_pairs) < ALPHA

    @property
    def significant(self) -> bool:
        return self.p_value < ALPHA


def is_binary(scores: Sequence[float]) -> bool:
    return all(s in (0.0, 1.0) for s in scores)


def paired_test(
    a: Sequence[float], b: Sequence[float], rng: np.random.Generator, *, binary: bool | None = None,
    with_interval: bool = True,
) -> PairedResult:
    """Paired comparison of scores `a[i]` and `b[i]` of the same probe i: McNemar exact when every score is 0 or 1
    (or `binary` says so), the sign-flip permutation test otherwise."""
    x, y = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if x.shape != y.shape:
        raise ValueError(f"{x.size} scores of A against {y.size} of B: a paired test needs pairs")
    d = y - x
    binary = is_binary(list(x) + list(y)) if binary is None else binary
    a_only, b_only = int((d < 0).sum()), int((d > 0).sum())
    if binary:
        test, p = "McNemar exact", mcnemar_exact(a_only, b_only)
    else:
        test, p = "sign-flip permutation", sign_flip_test(d, rng)
    interval = bootstrap_mean_interval(d, rng) if with_interval else Interval.missing()
    mean = float(d.mean()) if d.size else math.nan
    return PairedResult(test=test, n_pairs=int(d.size), p_value=p, mean_difference=mean, interval=interval,
                        a_only=a_only, b_only=b_only)
