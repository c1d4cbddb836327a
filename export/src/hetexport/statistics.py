"""Confidence intervals for the paper's claims: paired seed differences and proportions.

The distributions come from ``scipy.stats`` (Student's t, the binomial test's intervals);
this module only says which interval each figure gets and returns it as a small record.

Typical usage::

    paired_difference([0.48, 0.49], [0.50, 0.51])      # HET minus det per seed, t-interval
    wilson_interval(1353, 1400)                         # a proportion with its Wilson interval
    exact_interval(3, 400)                              # Clopper-Pearson, never too narrow

Paired t-interval: with ``d_s = a_s - b_s`` over n seeds (same data order and label noise for
both arms at a seed), ``mean(d) +/- t_{n-1, 1 - alpha/2} * sd(d) / sqrt(n)`` (``sd`` with
n - 1 in the denominator). It assumes the seed differences are roughly normal; with n = 3 to 5
it is wide, which is the point: it says how much the seeds agree.

Wilson score interval for k successes in n trials (z = the normal quantile):
``(p + z^2/2n +/- z sqrt(p(1-p)/n + z^2/4n^2)) / (1 + z^2/n)``, ``p = k/n``; unlike the plain
normal interval it stays inside [0, 1] and behaves near p = 1. The Clopper-Pearson ("exact")
interval inverts two one-sided binomial tests: its coverage is at least the confidence for
every p, at the price of width; it is the one for a bound that must hold (an error rate).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal, NamedTuple

import numpy as np
from scipy import stats

DEFAULT_CONFIDENCE = 0.95
PAIRED_METHOD = "paired t-interval over per-seed differences (n - 1 degrees of freedom)"
WILSON_METHOD = "Wilson score interval"
EXACT_METHOD = "Clopper-Pearson interval"
_SCIPY_METHODS: dict[str, Literal["wilson", "exact"]] = {WILSON_METHOD: "wilson",
                                                         EXACT_METHOD: "exact"}


class PairedDifference(NamedTuple):
    """``mean`` of the per-seed differences a - b, its interval [low, high], n seeds."""

    mean: float
    low: float
    high: float
    n: int
    differences: tuple[float, ...]
    confidence: float
    method: str = PAIRED_METHOD

    @property
    def excludes_zero(self) -> bool:
        return self.low > 0 or self.high < 0


class Proportion(NamedTuple):
    """``successes`` of ``total``, ``value = successes / total`` (NaN when total is 0), and its
    interval [low, high]."""

    successes: int
    total: int
    value: float
    low: float
    high: float
    confidence: float
    method: str = WILSON_METHOD


def paired_difference(a: Sequence[float], b: Sequence[float], *,
                      confidence: float = DEFAULT_CONFIDENCE) -> PairedDifference:
    """Mean of ``a_s - b_s`` with its paired t-interval (module doc); n >= 2 pairs."""
    differences = np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64)
    if differences.ndim != 1 or len(a) != len(b) or differences.shape[0] < 2:
        raise ValueError(f"need two equally long sequences of >= 2 values, got {len(a)}, {len(b)}")
    n = int(differences.shape[0])
    mean = float(differences.mean())
    quantile = float(stats.t.ppf(0.5 + confidence / 2.0, n - 1))
    half = quantile * float(differences.std(ddof=1)) / math.sqrt(n)
    return PairedDifference(mean, mean - half, mean + half, n,
                            tuple(float(d) for d in differences), confidence)


def wilson_interval(successes: int, total: int, *,
                    confidence: float = DEFAULT_CONFIDENCE) -> Proportion:
    """``successes / total`` with its Wilson score interval (module doc); NaN for total 0."""
    return _proportion(successes, total, confidence, WILSON_METHOD)


def exact_interval(successes: int, total: int, *,
                   confidence: float = DEFAULT_CONFIDENCE) -> Proportion:
    """``successes / total`` with its Clopper-Pearson interval (module doc); NaN for total 0."""
    return _proportion(successes, total, confidence, EXACT_METHOD)


def _proportion(successes: int, total: int, confidence: float, method: str) -> Proportion:
    if not 0 <= successes <= total:
        raise ValueError(f"need 0 <= successes <= total, got {successes}, {total}")
    if total == 0:
        return Proportion(0, 0, math.nan, math.nan, math.nan, confidence, method)
    interval = stats.binomtest(successes, total).proportion_ci(
        confidence_level=confidence, method=_SCIPY_METHODS[method])
    return Proportion(successes, total, successes / total, float(interval.low),
                      float(interval.high), confidence, method)
