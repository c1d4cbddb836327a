"""The intervals behind the claims: the paired t-interval, Wilson's and Clopper-Pearson's
intervals, against textbook values and the figures of the hand-written version they replaced."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hetexport.statistics import (
    EXACT_METHOD,
    exact_interval,
    paired_difference,
    wilson_interval,
)

HAND_WRITTEN_T_975 = {1: 12.706204736174659, 2: 4.302652729749456, 4: 2.7764451051977908,
                      9: 2.2621571627982027, 30: 2.042272456301233}
"""t_{df, 0.975} from the regularised incomplete beta and bisection that scipy.stats replaced."""


@pytest.mark.parametrize(("df", "textbook"), [(1, 12.706), (2, 4.303), (4, 2.776), (9, 2.262),
                                              (30, 2.042)])
def test_the_half_width_is_the_textbook_t_quantile_times_the_standard_error(
    df: int, textbook: float
) -> None:
    differences = np.linspace(-1.0, 1.0, df + 1) ** 3 + 0.25
    diff = paired_difference(differences, np.zeros(df + 1))
    standard_error = differences.std(ddof=1) / math.sqrt(df + 1)
    t = (diff.high - diff.mean) / standard_error
    assert t == pytest.approx(textbook, abs=1e-3)
    assert t == pytest.approx(HAND_WRITTEN_T_975[df], rel=1e-12)
    assert diff.mean - diff.low == pytest.approx(diff.high - diff.mean)


def test_many_seeds_approach_the_normal_interval() -> None:
    rng = np.random.default_rng(0)
    differences = rng.normal(size=10_001)
    diff = paired_difference(differences, np.zeros_like(differences))
    t = (diff.high - diff.mean) / (differences.std(ddof=1) / math.sqrt(differences.size))
    assert t == pytest.approx(1.960, abs=1e-3)


def test_seeds_that_agree_exactly_give_a_zero_width_interval() -> None:
    diff = paired_difference([0.3, 0.4, 0.5], [0.2, 0.3, 0.4])
    assert diff.low == pytest.approx(0.1) and diff.high == pytest.approx(0.1)


def test_paired_interval_is_mean_plus_minus_t_times_standard_error() -> None:
    het, det = [0.48, 0.49, 0.47, 0.50, 0.46], [0.50, 0.50, 0.49, 0.51, 0.49]
    diff = paired_difference(het, det)
    d = np.subtract(het, det)
    half = 2.776 * d.std(ddof=1) / math.sqrt(5)
    assert diff.mean == pytest.approx(d.mean())
    assert (diff.low, diff.high) == pytest.approx((d.mean() - half, d.mean() + half), abs=1e-5)
    # the hand-written version's figures, to the last digits
    assert (diff.low, diff.high) == pytest.approx((-0.028388506336835657, -0.0076114936631643555),
                                                  rel=1e-12)
    assert diff.n == 5 and diff.differences == pytest.approx(tuple(d))
    assert diff.excludes_zero and diff.high < 0


def test_pairing_removes_the_spread_shared_by_both_arms() -> None:
    """Seeds that move both heads together do not widen the paired interval."""
    base = np.array([0.40, 0.55, 0.45, 0.60, 0.50])
    diff = paired_difference(base - 0.01, base + np.array([0.0, 0.001, -0.001, 0.0005, 0.0]))
    assert diff.excludes_zero
    assert diff.high - diff.low < 0.01


def test_paired_difference_needs_two_pairs_of_equal_length() -> None:
    with pytest.raises(ValueError):
        paired_difference([0.1], [0.2])
    with pytest.raises(ValueError):
        paired_difference([0.1, 0.2], [0.2])


def test_wilson_interval_matches_the_known_value_and_stays_in_0_1() -> None:
    result = wilson_interval(8, 10)
    assert result.value == pytest.approx(0.8)
    assert (result.low, result.high) == pytest.approx((0.4902, 0.9433), abs=1e-4)
    assert wilson_interval(0, 20).low == pytest.approx(0.0, abs=1e-12)
    assert wilson_interval(0, 20).high > 0
    assert wilson_interval(20, 20).high == pytest.approx(1.0)
    assert wilson_interval(20, 20).low < 1
    assert math.isnan(wilson_interval(0, 0).value)
    with pytest.raises(ValueError):
        wilson_interval(3, 2)


@pytest.mark.parametrize(("successes", "total", "low", "high"), [
    (8, 10, 0.49016247153664183, 0.9433178485456247),
    (1353, 1400, 0.95564384725083, 0.9746606339240695),
    (3, 7, 0.1582198552514697, 0.7495416354723428),
])
def test_wilson_interval_gives_the_hand_written_versions_figures(
    successes: int, total: int, low: float, high: float
) -> None:
    result = wilson_interval(successes, total)
    assert (result.low, result.high) == pytest.approx((low, high), rel=1e-12)


def test_exact_interval_holds_the_textbook_bounds_and_contains_wilsons() -> None:
    """Clopper-Pearson for 0 of n: [0, 1 - (alpha/2)^(1/n)]; for k of n it is never narrower
    than Wilson's around the same estimate."""
    none = exact_interval(0, 20)
    assert none.low == 0.0 and none.high == pytest.approx(1 - 0.025 ** (1 / 20))
    assert none.method == EXACT_METHOD
    for successes, total in [(8, 10), (3, 400), (397, 400)]:
        exact, wilson = exact_interval(successes, total), wilson_interval(successes, total)
        assert exact.high - exact.low >= wilson.high - wilson.low
        assert exact.low <= exact.value <= exact.high
    assert math.isnan(exact_interval(0, 0).low)
