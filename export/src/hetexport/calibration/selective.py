"""Abstention with a guarantee: accept an answer when its confidence is at least a threshold,
chosen so that P(error among accepted <= r) >= 1 - delta.

Typical usage::

    rule = ltt_threshold(tuning=(conf_t, err_t), calibration=(conf_c, err_c), risk=0.05,
                         delta=0.1)
    accept = new_confidence >= rule.threshold          # rule.threshold None: accept nothing

Both procedures test, for a threshold ``t``, the null hypothesis "the error among accepted
images exceeds r". Given the images a threshold accepts (``n`` of them, ``k`` wrong), their
errors are independent Bernoulli draws of that error rate, so ``P(Bin(n, r) <= k)`` is a valid
p-value (``binomial_p_values``; MAPIE's ``compute_hoeffding_bentkus_p_value`` with
``binary=True`` reduces to it, the Hoeffding term being a looser Chernoff bound).

* **Learn-then-Test** (Angelopoulos, Bates, Candes, Jordan, Lei 2021) with fixed-sequence
  testing: thresholds are tested from strict to loose at level delta until the first one that
  is not rejected; the loosest rejected one is returned. The family-wise error is at most delta
  whatever the thresholds' risks, provided the sequence is fixed before the calibration labels
  are seen: here the grid (quantiles of the TUNING images' confidences) and its starting point
  (the threshold with the smallest p-value on the tuning images) come from the tuning part
  alone. A strict start would end the sequence at once whenever its few accepted images hold
  one error; starting where the tuning images say the test is easiest avoids that without
  MAPIE's multi-start split of delta.
* **SGR** (Geifman and El-Yaniv, NeurIPS 2017): a binary search over the calibration images'
  own confidences; each of its ``ceil(log2 n)`` steps uses the Clopper-Pearson bound at
  ``delta / ceil(log2 n)`` (a union bound), and the loosest tested threshold whose bound is
  below r is returned.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np
from scipy.stats import beta, binom

GRID_POINTS = 200
"""Thresholds Learn-then-Test considers: the tuning confidences' quantiles at accepted
fractions 1/200, 2/200, ..., 1."""


class Rule(NamedTuple):
    """An abstention rule and what it did on the images it was calibrated on: ``threshold``
    (None: accept nothing), the ``accepted`` count, the ``errors`` among them, and the
    ``1 - delta`` Clopper-Pearson ``bound`` of their error rate (1 when none accepted)."""

    threshold: float | None
    accepted: int
    errors: int
    bound: float

    def accepted_fraction(self, total: int) -> float:
        return self.accepted / total if total else 0.0

    @property
    def empirical_risk(self) -> float | None:
        return self.errors / self.accepted if self.accepted else None


def binomial_p_values(errors: np.ndarray, accepted: np.ndarray, risk: float) -> np.ndarray:
    """``P(Bin(n, risk) <= k)`` per (k errors, n accepted); 1 where nothing is accepted."""
    errors, accepted = np.asarray(errors), np.asarray(accepted)
    p = binom.cdf(errors, np.maximum(accepted, 1), risk)
    return np.where(accepted > 0, p, 1.0)


def clopper_pearson_upper(errors: int, accepted: int, delta: float) -> float:
    """The one-sided ``1 - delta`` upper confidence bound of a binomial rate from ``errors``
    of ``accepted``: the largest r with ``P(Bin(n, r) <= k) >= delta``."""
    if accepted == 0 or errors >= accepted:
        return 1.0
    return float(beta.ppf(1.0 - delta, errors + 1, accepted - errors))


def fixed_sequence(p_values: np.ndarray, delta: float, *, start: int = 0) -> int | None:
    """Test ``p_values[start], p_values[start + 1], ...`` at level ``delta`` until the first
    that exceeds it; the index of the last rejected one, or None when the first is not."""
    last = None
    for index in range(start, len(p_values)):
        if p_values[index] > delta:
            break
        last = index
    return last


def threshold_grid(confidences: np.ndarray, points: int = GRID_POINTS) -> np.ndarray:
    """Decreasing candidate thresholds (strict to loose): the ``1 - f`` quantiles of
    ``confidences`` for accepted fractions ``f = 1/points .. 1``, duplicates dropped."""
    fractions = np.arange(1, points + 1) / points
    grid = np.quantile(np.asarray(confidences, dtype=np.float64), 1.0 - fractions,
                       method="inverted_cdf")
    return np.unique(grid)[::-1]


def accepted_errors(confidences: np.ndarray, errors: np.ndarray,
                    thresholds: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per threshold t: how many images have confidence >= t, and how many of them are
    wrong (``errors`` bool/0-1 per image)."""
    order = np.argsort(-np.asarray(confidences, dtype=np.float64), kind="stable")
    ranked = np.asarray(confidences, dtype=np.float64)[order]
    wrong = np.concatenate([[0], np.cumsum(np.asarray(errors, dtype=np.int64)[order])])
    counts = np.searchsorted(-ranked, -np.asarray(thresholds), side="right")
    return counts, wrong[counts]


def ltt_threshold(
    *,
    tuning: tuple[np.ndarray, np.ndarray],
    calibration: tuple[np.ndarray, np.ndarray],
    risk: float,
    delta: float,
) -> Rule:
    """Learn-then-Test with fixed-sequence testing (module doc): grid and start from
    ``tuning`` (confidences, errors), the test on ``calibration``."""
    grid = threshold_grid(tuning[0])
    tune_n, tune_k = accepted_errors(tuning[0], tuning[1], grid)
    start = int(np.argmin(binomial_p_values(tune_k, tune_n, risk)))
    cal_n, cal_k = accepted_errors(calibration[0], calibration[1], grid)
    last = fixed_sequence(binomial_p_values(cal_k, cal_n, risk), delta, start=start)
    if last is None:
        return Rule(None, 0, 0, 1.0)
    n, k = int(cal_n[last]), int(cal_k[last])
    return Rule(float(grid[last]), n, k, clopper_pearson_upper(k, n, delta))


def sgr_threshold(calibration: tuple[np.ndarray, np.ndarray], *, risk: float,
                  delta: float) -> Rule:
    """Selection with guaranteed risk (Geifman and El-Yaniv 2017, Algorithm 1): binary
    search over the sorted calibration confidences, each step's bound at
    ``delta / ceil(log2 n)``; the loosest tested threshold whose bound is below ``risk``."""
    confidences = np.sort(np.asarray(calibration[0], dtype=np.float64))
    n = len(confidences)
    steps = max(1, math.ceil(math.log2(n))) if n > 1 else 1
    step_delta = delta / steps
    low, high = 0, n - 1  # indices into the ascending confidences: low accepts the most
    best = Rule(None, 0, 0, 1.0)
    for _ in range(steps):
        middle = (low + high + 1) // 2
        threshold = confidences[middle]
        count, wrong = accepted_errors(calibration[0], calibration[1], np.array([threshold]))
        bound = clopper_pearson_upper(int(wrong[0]), int(count[0]), step_delta)
        if bound < risk:
            if best.threshold is None or threshold < best.threshold:
                best = Rule(float(threshold), int(count[0]), int(wrong[0]), bound)
            high = middle
        else:
            low = middle
        if low >= high:
            break
    return best


def area_under_risk_coverage(confidences: np.ndarray, errors: np.ndarray) -> float:
    """Mean, over accepting the 1, 2, ..., n most confident images, of the error among
    them (the AURC of selective classification; lower ranks errors better)."""
    order = np.argsort(-np.asarray(confidences, dtype=np.float64), kind="stable")
    wrong = np.cumsum(np.asarray(errors, dtype=np.float64)[order])
    return float(np.mean(wrong / np.arange(1, len(wrong) + 1)))
