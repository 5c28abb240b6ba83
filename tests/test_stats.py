"""kanana_longctx.stats against values computed by hand or by formula (Wilson closed form, McNemar from binomial
sums, sign-flip p-values by enumerating every sign pattern)."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

from kanana_longctx.stats import (
    benjamini_hochberg, bootstrap_mean_interval, mcnemar_exact, min_pairs_for, paired_test, sign_flip_test,
    smallest_exact_p, wilson_interval,
)

Z95 = 1.959963984540054  # the 0.975 quantile of the standard normal


def wilson_closed_form(k: int, n: int, z: float = Z95) -> tuple[float, float]:
    p = k / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z / denom * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return centre - half, centre + half


@pytest.mark.parametrize("k, n", [(0, 10), (3, 10), (7, 10), (10, 10), (1, 1), (2, 3), (45, 96), (657, 1440)])
def test_wilson_matches_the_closed_form(k, n):
    low, high = wilson_closed_form(k, n)
    interval = wilson_interval(k, n)
    assert interval.low == pytest.approx(max(low, 0.0), abs=1e-12)
    assert interval.high == pytest.approx(min(high, 1.0), abs=1e-12)


def test_wilson_known_bounds_and_edges():
    # 3 of 3: the whole interval sits high but is wide; 0 of 3 mirrors it.
    three = wilson_interval(3, 3)
    assert three.low == pytest.approx(0.43850, abs=1e-5) and three.high == pytest.approx(1.0)
    none = wilson_interval(0, 3)
    assert none.low == pytest.approx(0.0, abs=1e-12) and none.high == pytest.approx(1 - three.low)
    assert math.isnan(wilson_interval(0, 0).low)
    with pytest.raises(ValueError):
        wilson_interval(4, 3)


def mcnemar_by_hand(b: int, c: int) -> float:
    n, k = b + c, min(b, c)
    if n == 0:
        return 1.0
    return min(1.0, 2 * sum(math.comb(n, i) for i in range(k + 1)) / 2**n)


@pytest.mark.parametrize(
    "b, c, expected",
    [
        (1, 8, 20 / 512),  # 2 * (C(9,0) + C(9,1)) / 2^9
        (0, 5, 2 / 32),  # five discordant pairs all one way: 0.0625, not significant
        (0, 6, 2 / 64),  # six: 0.03125, the fewest that can reach 0.05
        (2, 10, 158 / 4096),  # 2 * (1 + 12 + 66) / 2^12
        (3, 3, 1.0),  # balanced: capped at 1
        (0, 0, 1.0),  # no discordant pair: nothing to say
        (150, 527, None),
    ],
)
def test_mcnemar_exact_p_values(b, c, expected):
    expected = mcnemar_by_hand(b, c) if expected is None else expected
    assert mcnemar_exact(b, c) == pytest.approx(expected, rel=1e-9)
    assert mcnemar_exact(c, b) == pytest.approx(expected, rel=1e-9)  # two-sided: symmetric


def test_three_pairs_can_never_reach_five_percent():
    assert smallest_exact_p(3) == 0.25
    assert mcnemar_exact(0, 3) == 0.25  # the most lopsided 3-pair cell
    assert min_pairs_for(0.05) == 6
    assert smallest_exact_p(5) > 0.05 > smallest_exact_p(6)


def sign_flip_by_enumeration(d: list[float]) -> float:
    observed = abs(sum(d) / len(d))
    patterns = list(itertools.product((1, -1), repeat=len(d)))
    extreme = sum(1 for signs in patterns if abs(sum(s * x for s, x in zip(signs, d)) / len(d)) >= observed - 1e-12)
    return extreme / len(patterns)


@pytest.mark.parametrize(
    "d", [[0.5, 0.25, 1.0], [1, 1, 1, 1, 1, 1, -0.5], [0.3, -0.1, 0.2, 0.4, 0.0, 0.6, 0.1, -0.2], [1.0, -1.0]]
)
def test_sign_flip_is_exact_for_small_samples(d):
    rng = np.random.default_rng(0)
    assert sign_flip_test(d, rng) == pytest.approx(sign_flip_by_enumeration(d), abs=1e-12)


def test_sign_flip_without_any_difference_is_one():
    assert sign_flip_test([0.0, 0.0, 0.0], np.random.default_rng(0)) == 1.0
    assert sign_flip_test([], np.random.default_rng(0)) == 1.0


def test_sign_flip_on_a_large_sample_is_monte_carlo_and_reproducible():
    d = np.random.default_rng(5).normal(0.05, 0.3, size=400)
    p1 = sign_flip_test(d, np.random.default_rng(1))
    p2 = sign_flip_test(d, np.random.default_rng(1))
    assert p1 == p2 and 0.0 < p1 < 0.02  # a real shift of 0.05 with sd 0.3 over 400 pairs


def test_paired_test_picks_mcnemar_for_binary_scores():
    a = [1, 1, 1, 0, 0, 0, 0, 0, 0, 1]
    b = [1, 0, 1, 1, 1, 1, 1, 1, 1, 1]
    result = paired_test(a, b, np.random.default_rng(0))
    assert result.test == "McNemar exact"
    assert (result.a_only, result.b_only, result.n_pairs) == (1, 6, 10)
    assert result.p_value == pytest.approx(mcnemar_by_hand(1, 6))
    assert result.mean_difference == pytest.approx(0.5)
    assert result.interval.low <= 0.5 <= result.interval.high


def test_paired_test_uses_the_sign_flip_for_fractional_scores():
    a = [0.5, 0.25, 0.0]
    b = [1.0, 0.5, 1.0]
    result = paired_test(a, b, np.random.default_rng(0))
    assert result.test == "sign-flip permutation"
    assert result.p_value == pytest.approx(0.25)  # 3 pairs: nothing smaller is possible
    assert not result.can_reach_alpha and not result.significant
    with pytest.raises(ValueError):
        paired_test([1.0], [1.0, 0.0], np.random.default_rng(0))


def test_bootstrap_interval_covers_the_mean_and_is_reproducible():
    values = np.random.default_rng(3).uniform(0, 1, size=60)
    one = bootstrap_mean_interval(values, np.random.default_rng(7))
    two = bootstrap_mean_interval(values, np.random.default_rng(7))
    assert one == two and one.low < values.mean() < one.high
    assert one.high - one.low < 0.25
    point = bootstrap_mean_interval([0.7, 0.7, 0.7], np.random.default_rng(0))
    assert (point.low, point.high) == (0.7, 0.7)
    assert math.isnan(bootstrap_mean_interval([], np.random.default_rng(0)).low)


def test_benjamini_hochberg_by_hand():
    # sorted p 0.01, 0.03, 0.04, 0.2 (m = 4): p*m/rank = 0.04, 0.06, 0.0533, 0.2, then the running minimum from the top
    adjusted = benjamini_hochberg([0.01, 0.04, 0.03, 0.2])
    assert list(adjusted) == pytest.approx([0.04, 0.16 / 3, 0.16 / 3, 0.2])
