"""Split-conformal prediction sets: finite-sample thresholds, per method and coverage.

Typical usage::

    q = conformal_quantile(label_scores(probs, labels, "lac"), coverage=0.9)
    sets = set_scores(new_probs, "lac") <= q       # holds the label w.p. >= 0.9

For exchangeable calibration and test images and a continuous score, the set
``{y : s(x, y) <= q}`` with ``q`` the ``k = ceil((n + 1)(1 - alpha))``-th smallest of the ``n``
calibration scores covers the label with probability in ``[1 - alpha, 1 - alpha + 1/(n+1))``
(Vovk et al. 2005; Angelopoulos and Bates, "A gentle introduction", Thm. D.1). When
``k > n`` no finite threshold has the guarantee and the set is every class (``None``).
TorchCP's ``calculate_conformal_value`` and MAPIE's ``np.quantile(scores, k / n,
method="higher")`` compute the same order statistic.

Class-conditional (Mondrian) thresholds ``q_y`` use the images labelled y alone, so that the
coverage holds within each class; a class needs at least ``min_images_per_class(coverage)``
images (``ceil((n_y + 1) c) <= n_y``, i.e. ``n_y >= c / (1 - c)``: 9 at 0.9, 99 at 0.99).

``calibrate_sets`` computes every method's thresholds at every coverage on the calibration
part and chooses, per coverage, the method with the smallest mean set size on the separate
tuning part (RAPS's ``k_reg`` and ``penalty`` are chosen there too, as Angelopoulos et al.
2021 do), so the choice costs the guarantee nothing.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from fractions import Fraction
from typing import NamedTuple

import numpy as np
from hetcontract.calibration import PredictionSets, SetThresholds
from hetcontract.decision_scores import SET_SCORES, set_scores, threshold_array

RAPS_PENALTIES: tuple[float, ...] = (0.001, 0.01, 0.1, 0.2, 0.5)
"""The penalties RAPS is tuned over (Angelopoulos et al. 2021, ``pick_lamda_size``)."""


def finite_sample_rank(n: int, coverage: float) -> int:
    """``k = ceil((n + 1) * coverage)``, computed exactly for the decimal ``coverage`` (a
    float product such as ``1000 * 0.9`` may land a hair above an integer)."""
    return math.ceil((n + 1) * Fraction(str(coverage)))


def conformal_quantile(scores: np.ndarray, coverage: float) -> float | None:
    """The ``ceil((n + 1) * coverage)``-th smallest of ``scores``; None (infinite) when that
    rank exceeds n."""
    values = np.asarray(scores, dtype=np.float64).reshape(-1)
    rank = finite_sample_rank(len(values), coverage)
    if rank > len(values):
        return None
    return float(np.partition(values, rank - 1)[rank - 1])


def min_images_per_class(coverage: float) -> int:
    """Fewest images of a class with a finite class-conditional threshold at ``coverage``."""
    c = Fraction(str(coverage))
    return math.ceil(c / (1 - c))


def class_conditional_quantiles(
    scores: np.ndarray, labels: np.ndarray, num_classes: int, coverage: float
) -> list[float] | None:
    """One threshold per class from that class's scores; None when some class has fewer than
    ``min_images_per_class(coverage)`` images."""
    labels = np.asarray(labels)
    thresholds = []
    for y in range(num_classes):
        q = conformal_quantile(np.asarray(scores)[labels == y], coverage)
        if q is None:
            return None
        thresholds.append(q)
    return thresholds


def label_ranks(probs: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Rank of each label among its input's classes by decreasing probability, from 1 (ties
    by class id, as in ``set_scores``)."""
    order = np.argsort(-np.asarray(probs, dtype=np.float64), axis=1, kind="stable")
    return np.argmax(order == np.asarray(labels)[:, None], axis=1) + 1


class ConformalMethod(NamedTuple):
    """A conformal method: score, its RAPS parameters, marginal or class-conditional."""

    method: str
    class_conditional: bool = False
    penalty: float = 0.0
    k_reg: int = 0

    def scores(self, probs: np.ndarray) -> np.ndarray:
        return set_scores(probs, self.method, penalty=self.penalty, k_reg=self.k_reg)

    def thresholds(self, probs: np.ndarray, labels: np.ndarray,
                   coverage: float) -> list[float | None] | None:
        """The threshold(s) from labelled ``probs``: one, or one per class; None when
        class-conditional thresholds are out of reach (too few images of a class)."""
        all_scores = self.scores(probs)
        scores = all_scores[np.arange(len(labels)), labels]
        if self.class_conditional:
            return class_conditional_quantiles(scores, labels, probs.shape[1], coverage)
        return [conformal_quantile(scores, coverage)]

    def mean_set_size(self, probs: np.ndarray, thresholds: Sequence[float | None]) -> float:
        return float(prediction_sets(self.scores(probs), thresholds).sum(axis=1).mean())


def prediction_sets(scores: np.ndarray, thresholds: Sequence[float | None]) -> np.ndarray:
    """Bool [B, K]: ``scores <= threshold`` (one per class or one for all; None infinite)."""
    return scores <= threshold_array(thresholds)


def raps_parameters(probs: np.ndarray, labels: np.ndarray, coverage: float) -> ConformalMethod:
    """RAPS tuned on ``probs``: ``k_reg`` the finite-sample ``coverage`` quantile of the
    labels' ranks, then the penalty of ``RAPS_PENALTIES`` with the smallest mean set size
    (thresholds from the same images)."""
    k = conformal_quantile(label_ranks(probs, labels), coverage)
    k_reg = probs.shape[1] if k is None else int(k)
    best: tuple[float, ConformalMethod] | None = None
    for penalty in RAPS_PENALTIES:
        candidate = ConformalMethod("raps", penalty=penalty, k_reg=k_reg)
        thresholds = candidate.thresholds(probs, labels, coverage)
        assert thresholds is not None
        size = candidate.mean_set_size(probs, thresholds)
        if best is None or size < best[0]:
            best = (size, candidate)
    assert best is not None
    return best[1]


def calibrate_sets(
    tuning: tuple[np.ndarray, np.ndarray],
    calibration: tuple[np.ndarray, np.ndarray],
    *,
    coverages: Sequence[float],
    default_coverage: float,
) -> PredictionSets:
    """Every method's thresholds at every coverage from ``calibration`` (probs [N, K], labels
    [N]), the method served at each coverage chosen on ``tuning`` by its mean set size (ties:
    the first of LAC, APS, RAPS, marginal before class-conditional)."""
    tune_probs, tune_labels = (np.asarray(a) for a in tuning)
    cal_probs, cal_labels = (np.asarray(a) for a in calibration)
    rows: list[SetThresholds] = []
    for coverage in coverages:
        level: list[SetThresholds] = []
        for method in _candidates(tune_probs, tune_labels, coverage):
            thresholds = method.thresholds(cal_probs, cal_labels, coverage)
            tuned = method.thresholds(tune_probs, tune_labels, coverage)
            if thresholds is None or tuned is None:
                continue  # a class has too few images for class-conditional thresholds
            level.append(SetThresholds(
                coverage=coverage, method=method.method,
                class_conditional=method.class_conditional, penalty=method.penalty,
                k_reg=method.k_reg, thresholds=thresholds,
                mean_set_size=method.mean_set_size(tune_probs, tuned),
            ))
        best = min(range(len(level)), key=lambda i: level[i].mean_set_size)
        rows.extend(row.model_copy(update={"chosen": i == best}) for i, row in enumerate(level))
    return PredictionSets(default_coverage=default_coverage, table=rows)


def _candidates(probs: np.ndarray, labels: np.ndarray, coverage: float) -> list[ConformalMethod]:
    methods = []
    for name in SET_SCORES:
        base = raps_parameters(probs, labels, coverage) if name == "raps" else ConformalMethod(name)
        methods.append(base)
    return methods + [m._replace(class_conditional=True) for m in methods]
