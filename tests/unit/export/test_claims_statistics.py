"""The intervals behind the claims: Student's t, the paired t-interval, Wilson's interval."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hetexport.statistics import (
    paired_difference,
    student_t_cdf,
    student_t_quantile,
    wilson_interval,
)


@pytest.mark.parametrize(("df", "textbook"), [(1, 12.706), (2, 4.303), (4, 2.776), (9, 2.262),
                                              (30, 2.042)])
def test_t_quantile_matches_the_textbook_table(df: int, textbook: float) -> None:
    assert student_t_quantile(0.975, df) == pytest.approx(textbook, abs=1e-3)


def test_t_distribution_is_symmetric_and_approaches_the_normal() -> None:
    assert student_t_cdf(0.0, 3) == pytest.approx(0.5)
    assert student_t_cdf(-1.3, 5) == pytest.approx(1 - student_t_cdf(1.3, 5))
    assert student_t_quantile(0.025, 4) == pytest.approx(-student_t_quantile(0.975, 4))
    assert student_t_quantile(0.975, 10_000) == pytest.approx(1.960, abs=1e-3)


def test_paired_interval_is_mean_plus_minus_t_times_standard_error() -> None:
    het, det = [0.48, 0.49, 0.47, 0.50, 0.46], [0.50, 0.50, 0.49, 0.51, 0.49]
    diff = paired_difference(het, det)
    d = np.subtract(het, det)
    half = 2.776 * d.std(ddof=1) / math.sqrt(5)
    assert diff.mean == pytest.approx(d.mean())
    assert (diff.low, diff.high) == pytest.approx((d.mean() - half, d.mean() + half), abs=1e-5)
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
