"""Split-conformal prediction sets: the finite-sample quantile, the three scores, class-
conditional thresholds and the method chosen on tuning images only, against textbook cases
and the semantics of TorchCP and MAPIE."""

from __future__ import annotations

import math
from fractions import Fraction

import numpy as np
import pytest
from hetcontract.decision_scores import label_scores, set_scores
from hetexport.calibration.conformal import (
    ConformalMethod,
    calibrate_sets,
    class_conditional_quantiles,
    conformal_quantile,
    finite_sample_rank,
    label_ranks,
    min_images_per_class,
    prediction_sets,
)

# TorchCP's APS/RAPS docstring example.
PROBS = np.array([[0.1, 0.4, 0.5], [0.3, 0.3, 0.4]])


def test_the_threshold_is_the_ceil_n_plus_1_times_coverage_th_smallest_score() -> None:
    scores = np.arange(1, 20, dtype=float)[::-1]  # 19 scores, n + 1 = 20
    assert conformal_quantile(scores, 0.9) == 18.0  # ceil(20 * 0.9) = 18
    assert conformal_quantile(scores, 0.8) == 16.0
    assert conformal_quantile(np.arange(9.0), 0.9) == 8.0  # ceil(10 * 0.9) = 9 = n: the max


def test_too_few_scores_give_an_infinite_threshold() -> None:
    assert conformal_quantile(np.arange(8.0), 0.9) is None  # ceil(9 * 0.9) = 9 > 8
    assert conformal_quantile(np.arange(98.0), 0.99) is None


def test_the_rank_is_exact_for_decimal_levels() -> None:
    # (999 + 1) * 0.9 and friends must not round up to the next integer.
    assert finite_sample_rank(999, 0.9) == 900
    assert finite_sample_rank(99, 0.95) == 95
    assert finite_sample_rank(4999, 0.99) == 4950
    assert finite_sample_rank(19, 0.9) == 18


@pytest.mark.parametrize("n", [10, 19, 57, 1000, 4321])
@pytest.mark.parametrize("coverage", [0.8, 0.9, 0.95, 0.99])
def test_matches_torchcp_and_is_never_above_mapie(n: int, coverage: float) -> None:
    """TorchCP's ``calculate_conformal_value``: the ``ceil(N * ceil((N + 1)(1 - alpha)) / N)``
    -th smallest (in exact arithmetic, the k-th), infinite when the level exceeds 1. MAPIE's
    ``np.quantile(scores, (n + 1)(1 - alpha) / n, method="higher")`` takes the element at
    ``ceil((n - 1) q)``: the k-th or the (k + 1)-th smallest (one rank more conservative for
    some n; n = 19 at 0.9 takes the largest of 19 where the textbook takes the 18th)."""
    scores = np.random.default_rng(n).random(n)
    ranked = np.sort(scores)
    level = Fraction(math.ceil((n + 1) * Fraction(str(coverage))), n)
    torchcp = None if level > 1 else float(ranked[math.ceil(n * level) - 1])
    assert conformal_quantile(scores, coverage) == torchcp
    if torchcp is not None:
        mapie = float(np.quantile(scores, (n + 1) * coverage / n, method="higher"))
        rank = int(np.searchsorted(ranked, mapie)) + 1
        assert finite_sample_rank(n, coverage) <= rank <= finite_sample_rank(n, coverage) + 1


def test_coverage_is_k_over_n_plus_1_over_calibration_draws() -> None:
    """For continuous exchangeable scores, P(test score <= q) = k / (n + 1) exactly."""
    rng = np.random.default_rng(0)
    n, coverage, draws = 19, 0.9, 40_000
    scores = rng.random((draws, n + 1))
    thresholds = np.sort(scores[:, :n], axis=1)[:, finite_sample_rank(n, coverage) - 1]
    covered = np.mean(scores[:, n] <= thresholds)
    assert covered == pytest.approx(18 / 20, abs=4 * math.sqrt(0.9 * 0.1 / draws))


def test_lac_scores_are_one_minus_the_probability() -> None:
    np.testing.assert_allclose(set_scores(PROBS, "lac"), 1 - PROBS)


def test_aps_scores_are_the_mass_ranked_at_or_above_the_class() -> None:
    """TorchCP's APS with ``randomized=False``; ties ranked by class id."""
    np.testing.assert_allclose(set_scores(PROBS, "aps"), [[1.0, 0.9, 0.5], [0.7, 1.0, 0.4]])


def test_raps_adds_the_penalty_beyond_k_reg() -> None:
    """TorchCP's RAPS: ``penalty * max(0, rank - k_reg)``, rank from 1."""
    np.testing.assert_allclose(set_scores(PROBS, "raps", penalty=0.1, k_reg=1),
                               [[1.2, 1.0, 0.5], [0.8, 1.2, 0.4]])
    np.testing.assert_allclose(set_scores(PROBS, "raps", penalty=0.1, k_reg=3),
                               set_scores(PROBS, "aps"))


def test_label_scores_pick_each_inputs_label() -> None:
    np.testing.assert_allclose(label_scores(PROBS, np.array([1, 2]), "aps"), [0.9, 0.4])
    np.testing.assert_array_equal(label_ranks(PROBS, np.array([1, 0])), [2, 2])


def test_sets_hold_the_classes_whose_score_is_at_most_the_threshold() -> None:
    np.testing.assert_array_equal(
        prediction_sets(set_scores(PROBS, "lac"), [0.65]),
        [[False, True, True], [False, False, True]],
    )
    np.testing.assert_array_equal(  # one threshold per class; None: every input has it
        prediction_sets(set_scores(PROBS, "lac"), [0.0, None, 0.55]),
        [[False, True, True], [False, True, False]],
    )


@pytest.mark.parametrize(("coverage", "images"), [(0.8, 4), (0.9, 9), (0.95, 19), (0.99, 99)])
def test_class_conditional_needs_coverage_over_one_minus_coverage_images(
    coverage: float, images: int
) -> None:
    assert min_images_per_class(coverage) == images
    assert conformal_quantile(np.arange(float(images)), coverage) is not None
    assert conformal_quantile(np.arange(float(images - 1)), coverage) is None


def test_class_conditional_thresholds_come_from_each_class_alone() -> None:
    scores = np.array([0.1, 0.2, 0.3, 0.4, 0.9, 0.8, 0.7, 0.6])
    labels = np.array([0, 0, 0, 0, 1, 1, 1, 1])
    assert class_conditional_quantiles(scores, labels, 2, 0.8) == [0.4, 0.9]
    assert class_conditional_quantiles(scores, labels, 3, 0.8) is None  # class 2 has none


def _synthetic(n: int, classes: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Dirichlet probabilities and labels drawn from them: a calibrated model."""
    rng = np.random.default_rng(seed)
    probs = rng.dirichlet(np.full(classes, 0.3), size=n)
    labels = np.array([rng.choice(classes, p=p) for p in probs])
    return probs, labels


def test_calibrate_sets_chooses_one_method_per_coverage_on_the_tuning_part() -> None:
    tune, cal = _synthetic(600, 5, 1), _synthetic(1400, 5, 2)
    sets = calibrate_sets(tune, cal, coverages=(0.8, 0.9), default_coverage=0.9)
    assert sets.coverages == [0.8, 0.9]
    for coverage in sets.coverages:
        chosen = sets.chosen(coverage)
        rows = [row for row in sets.table if row.coverage == coverage]
        assert {(r.method, r.class_conditional) for r in rows} >= {
            ("lac", False), ("aps", False), ("raps", False), ("lac", True)}
        assert chosen.mean_set_size == min(r.mean_set_size for r in rows)
        method = ConformalMethod(chosen.method, chosen.class_conditional, chosen.penalty,
                                 chosen.k_reg)
        assert chosen.thresholds == method.thresholds(*cal, coverage)  # the calibration part


def test_calibrate_sets_skips_class_conditional_where_a_class_has_too_few_images() -> None:
    tune, cal = _synthetic(300, 5, 3), _synthetic(300, 5, 4)
    sets = calibrate_sets(tune, cal, coverages=(0.8, 0.99), default_coverage=0.8)
    assert any(r.class_conditional for r in sets.table if r.coverage == 0.8)
    assert not any(r.class_conditional for r in sets.table if r.coverage == 0.99)


def test_sets_cover_new_images_at_the_declared_level() -> None:
    """A calibrated synthetic model: coverage of fresh images within Monte Carlo error."""
    tune, cal = _synthetic(1000, 6, 5), _synthetic(3000, 6, 6)
    test_probs, test_labels = _synthetic(20_000, 6, 7)
    sets = calibrate_sets(tune, cal, coverages=(0.8, 0.9, 0.95), default_coverage=0.9)
    for row in sets.table:
        method = ConformalMethod(row.method, row.class_conditional, row.penalty, row.k_reg)
        member = prediction_sets(method.scores(test_probs), row.thresholds)
        coverage = member[np.arange(len(test_labels)), test_labels].mean()
        # calibration draw (n = 3000, or ~500 per class) plus test sampling
        assert abs(coverage - row.coverage) < 0.03, (row.method, row.class_conditional)
