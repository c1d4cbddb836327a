"""Abstention with a guarantee: binomial p-values, Clopper-Pearson bounds, fixed-sequence
testing, Learn-then-Test and SGR, against exact small cases, MAPIE's semantics and the
guarantee itself on a model whose risk is known in closed form."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hetexport.calibration.selective import (
    accepted_errors,
    area_under_risk_coverage,
    binomial_p_values,
    clopper_pearson_upper,
    fixed_sequence,
    ltt_threshold,
    sgr_threshold,
    threshold_grid,
)
from scipy.stats import binom


def _binomial_cdf(k: int, n: int, p: float) -> float:
    return sum(math.comb(n, i) * p**i * (1 - p) ** (n - i) for i in range(k + 1))


@pytest.mark.parametrize(("k", "n", "risk"), [(0, 20, 0.1), (2, 30, 0.05), (5, 40, 0.1),
                                              (0, 230, 0.01), (12, 100, 0.1)])
def test_p_value_is_the_binomial_lower_tail(k: int, n: int, risk: float) -> None:
    assert binomial_p_values(np.array([k]), np.array([n]), risk)[0] == pytest.approx(
        _binomial_cdf(k, n, risk), rel=1e-9)
    assert binomial_p_values(np.array([0]), np.array([20]), 0.1)[0] == pytest.approx(0.9**20)


def test_nothing_accepted_is_never_significant() -> None:
    assert binomial_p_values(np.array([0]), np.array([0]), 0.05)[0] == 1.0


def test_p_values_match_mapies_binary_hoeffding_bentkus() -> None:
    """MAPIE's ``compute_hoeffding_bentkus_p_value(..., binary=True)``: the smaller of the
    Hoeffding bound ``exp(-n h1(min(r_hat, r), r))`` and ``binom.cdf(ceil(n r_hat), n, r)``;
    the binomial tail is never above the Chernoff bound, so both are the binomial tail."""
    rng = np.random.default_rng(0)
    n = rng.integers(1, 500, size=200)
    k = (rng.random(200) * n * 0.2).astype(int)
    risk = 0.05
    r_hat = k / n
    clipped = np.minimum(r_hat, risk)
    with np.errstate(divide="ignore", invalid="ignore"):
        h1 = np.where(clipped > 0, clipped * np.log(clipped / risk), 0.0) + (
            1 - clipped) * np.log((1 - clipped) / (1 - risk))
    # MAPIE writes the error count as ceil(n * r_hat); in exact arithmetic that is k (in
    # floating point n * (k / n) may land a hair above k, one error more: a tiny bit looser)
    errors = np.ceil(n * r_hat - 1e-9)
    mapie = np.minimum(np.exp(-n * h1), binom.cdf(errors, n, risk))
    np.testing.assert_allclose(binomial_p_values(k, n, risk), mapie, rtol=1e-9)


def test_clopper_pearson_with_no_error_is_one_minus_delta_to_the_one_over_n() -> None:
    assert clopper_pearson_upper(0, 100, 0.05) == pytest.approx(1 - 0.05 ** (1 / 100))
    assert clopper_pearson_upper(3, 3, 0.1) == 1.0
    assert clopper_pearson_upper(0, 0, 0.1) == 1.0


def test_clopper_pearson_bound_is_where_the_binomial_tail_reaches_delta() -> None:
    bound = clopper_pearson_upper(7, 120, 0.1)
    assert _binomial_cdf(7, 120, bound) == pytest.approx(0.1, rel=1e-6)


def test_fixed_sequence_stops_at_the_first_hypothesis_not_rejected() -> None:
    p = np.array([0.01, 0.02, 0.2, 0.01, 0.03])
    assert fixed_sequence(p, 0.1) == 1
    assert fixed_sequence(p, 0.1, start=3) == 4
    assert fixed_sequence(p, 0.1, start=2) is None
    assert fixed_sequence(p, 0.5) == 4


def test_fixed_sequence_from_the_first_matches_mapies_single_start() -> None:
    """MAPIE's ``fst_ascending(p_values, delta, n_starts=1)``: from index 0, reject while
    ``p <= delta``."""
    rng = np.random.default_rng(1)
    for _ in range(50):
        p = np.sort(rng.random(30) * 0.3)[::-1] if rng.random() < 0.5 else rng.random(30)
        rejected = []
        for j, value in enumerate(p):
            if value > 0.1:
                break
            rejected.append(j)
        assert fixed_sequence(p, 0.1) == (rejected[-1] if rejected else None)


def test_accepted_errors_counts_images_at_or_above_each_threshold() -> None:
    confidences = np.array([0.9, 0.8, 0.8, 0.5, 0.2])
    errors = np.array([0, 1, 0, 1, 1])
    counts, wrong = accepted_errors(confidences, errors, np.array([0.95, 0.8, 0.5, 0.0]))
    np.testing.assert_array_equal(counts, [0, 3, 4, 5])
    np.testing.assert_array_equal(wrong, [0, 1, 2, 3])


def test_the_grid_runs_strict_to_loose_and_ends_accepting_everything() -> None:
    confidences = np.random.default_rng(2).random(1000)
    grid = threshold_grid(confidences)
    assert np.all(np.diff(grid) < 0)
    assert grid[-1] == confidences.min()
    assert len(grid) == 200


def test_aurc_of_a_perfect_ranking_is_below_a_reversed_one() -> None:
    confidences = np.arange(10.0)
    errors = (confidences < 3).astype(int)  # the three least confident are wrong
    assert area_under_risk_coverage(confidences, errors) < area_under_risk_coverage(
        -confidences, errors)
    assert area_under_risk_coverage(confidences, np.zeros(10)) == 0.0


def _draw(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
    """A model whose confidence c is uniform and wrong with probability (1 - c)^2: the error
    among images with c >= t is (1 - t)^2 / 3, so r = 5 % allows accepting sqrt(0.15) =
    38.7 % of the images."""
    confidence = rng.random(n)
    return confidence, rng.random(n) < (1 - confidence) ** 2


def _true_risk(threshold: float | None) -> float:
    return 0.0 if threshold is None else (1 - threshold) ** 2 / 3


ORACLE_ACCEPTED = math.sqrt(0.15)


@pytest.mark.parametrize(("procedure", "share_of_oracle"), [("ltt", 0.7), ("sgr", 0.5)])
def test_the_accepted_risk_exceeds_r_in_at_most_delta_of_calibration_draws(
    procedure: str, share_of_oracle: float
) -> None:
    rng = np.random.default_rng(3)
    risk, delta, draws = 0.05, 0.1, 300
    violations, accepted = 0, []
    for _ in range(draws):
        tuning, calibration = _draw(rng, 600), _draw(rng, 1400)
        if procedure == "ltt":
            rule = ltt_threshold(tuning=tuning, calibration=calibration, risk=risk,
                                 delta=delta)
        else:
            rule = sgr_threshold(calibration, risk=risk, delta=delta)
        violations += _true_risk(rule.threshold) > risk
        accepted.append(0.0 if rule.threshold is None else 1 - rule.threshold)
    # P(violation) <= delta; binomial slack of three standard errors over 300 draws
    assert violations / draws <= delta + 3 * math.sqrt(delta * (1 - delta) / draws)
    # and it is not vacuous: it accepts a good part of what an oracle knowing the risk would
    assert share_of_oracle * ORACLE_ACCEPTED < float(np.mean(accepted)) <= ORACLE_ACCEPTED


def test_ltt_accepts_nothing_when_no_threshold_is_safe() -> None:
    rng = np.random.default_rng(4)
    confidence = rng.random(500)
    wrong = rng.random(500) < 0.5  # 50 % error whatever the confidence
    rule = ltt_threshold(tuning=(confidence[:200], wrong[:200]),
                         calibration=(confidence[200:], wrong[200:]), risk=0.05, delta=0.1)
    assert rule.threshold is None and rule.accepted == 0 and rule.bound == 1.0


def test_the_rule_reports_its_calibration_counts_and_a_bound_below_r() -> None:
    rng = np.random.default_rng(5)
    tuning, calibration = _draw(rng, 600), _draw(rng, 1400)
    rule = ltt_threshold(tuning=tuning, calibration=calibration, risk=0.05, delta=0.1)
    assert rule.threshold is not None
    counts, wrong = accepted_errors(*calibration, np.array([rule.threshold]))
    assert (rule.accepted, rule.errors) == (counts[0], wrong[0])
    assert rule.empirical_risk == wrong[0] / counts[0]
    assert rule.bound <= 0.05  # p <= delta at r is the Clopper-Pearson bound below r
