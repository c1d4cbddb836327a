"""Confidence intervals for the paper's claims: paired seed differences and proportions.

Pure Python and numpy (no torch, no scipy), so the gateway-side checks can import it too.

Typical usage::

    paired_difference([0.48, 0.49], [0.50, 0.51])      # HET minus det per seed, t-interval
    wilson_interval(1353, 1400)                         # a proportion with its Wilson interval

Paired t-interval: with ``d_s = a_s - b_s`` over n seeds (same data order and label noise for
both arms at a seed), ``mean(d) +/- t_{n-1, 1 - alpha/2} * sd(d) / sqrt(n)`` (``sd`` with
n - 1 in the denominator). It assumes the seed differences are roughly normal; with n = 3 to 5
it is wide, which is the point: it says how much the seeds agree.

Wilson score interval for k successes in n trials (z = the normal quantile):
``(p + z^2/2n +/- z sqrt(p(1-p)/n + z^2/4n^2)) / (1 + z^2/n)``, ``p = k/n``; unlike the plain
normal interval it stays inside [0, 1] and behaves near p = 1.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from statistics import NormalDist
from typing import NamedTuple

import numpy as np

DEFAULT_CONFIDENCE = 0.95
PAIRED_METHOD = "paired t-interval over per-seed differences (n - 1 degrees of freedom)"
WILSON_METHOD = "Wilson score interval"
_BETA_ITERATIONS = 300
_BETA_EPS = 1e-15
_BISECTION_STEPS = 200


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


def _beta_continued_fraction(a: float, b: float, x: float) -> float:
    """The continued fraction of the regularised incomplete beta (modified Lentz)."""
    tiny = 1e-300
    c, d = 1.0, 1.0 - (a + b) * x / (a + 1.0)
    d = 1.0 / (d if abs(d) > tiny else tiny)
    result = d
    for m in range(1, _BETA_ITERATIONS + 1):
        for numerator in (m * (b - m) * x / ((a + 2 * m - 1) * (a + 2 * m)),
                          -(a + m) * (a + b + m) * x / ((a + 2 * m) * (a + 2 * m + 1))):
            d = 1.0 + numerator * d
            d = 1.0 / (d if abs(d) > tiny else tiny)
            c = 1.0 + numerator / c
            c = c if abs(c) > tiny else tiny
            result *= c * d
        if abs(c * d - 1.0) < _BETA_EPS:
            break
    return result


def regularized_incomplete_beta(a: float, b: float, x: float) -> float:
    """``I_x(a, b) = B(x; a, b) / B(a, b)`` for x in [0, 1]."""
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    log_front = (math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b)
                 + a * math.log(x) + b * math.log1p(-x))
    if x < (a + 1.0) / (a + b + 2.0):
        return math.exp(log_front) * _beta_continued_fraction(a, b, x) / a
    return 1.0 - math.exp(log_front) * _beta_continued_fraction(b, a, 1.0 - x) / b


def student_t_cdf(t: float, df: float) -> float:
    """``P(T <= t)`` for Student's t with ``df`` degrees of freedom:
    ``1 - I_{df/(df+t^2)}(df/2, 1/2) / 2`` for t >= 0, symmetric below."""
    tail = 0.5 * regularized_incomplete_beta(df / 2.0, 0.5, df / (df + t * t))
    return 1.0 - tail if t >= 0 else tail


def student_t_quantile(probability: float, df: float) -> float:
    """The t with ``student_t_cdf(t, df) = probability`` (bisection), e.g. 2.776 for
    (0.975, 4)."""
    if not 0.0 < probability < 1.0 or df <= 0:
        raise ValueError(f"need 0 < probability < 1 and df > 0, got {probability}, {df}")
    if probability < 0.5:
        return -student_t_quantile(1.0 - probability, df)
    low, high = 0.0, 1.0
    while student_t_cdf(high, df) < probability:
        high *= 2.0
    for _ in range(_BISECTION_STEPS):
        middle = 0.5 * (low + high)
        low, high = (middle, high) if student_t_cdf(middle, df) < probability else (low, middle)
    return 0.5 * (low + high)


def paired_difference(a: Sequence[float], b: Sequence[float], *,
                      confidence: float = DEFAULT_CONFIDENCE) -> PairedDifference:
    """Mean of ``a_s - b_s`` with its paired t-interval (module doc); n >= 2 pairs."""
    differences = np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64)
    if differences.ndim != 1 or len(a) != len(b) or differences.shape[0] < 2:
        raise ValueError(f"need two equally long sequences of >= 2 values, got {len(a)}, {len(b)}")
    n = int(differences.shape[0])
    mean = float(differences.mean())
    half = (student_t_quantile(0.5 + confidence / 2.0, n - 1)
            * float(differences.std(ddof=1)) / math.sqrt(n))
    return PairedDifference(mean, mean - half, mean + half, n,
                            tuple(float(d) for d in differences), confidence)


def wilson_interval(successes: int, total: int, *,
                    confidence: float = DEFAULT_CONFIDENCE) -> Proportion:
    """``successes / total`` with its Wilson score interval (module doc); NaN for total 0."""
    if not 0 <= successes <= total:
        raise ValueError(f"need 0 <= successes <= total, got {successes}, {total}")
    if total == 0:
        return Proportion(0, 0, math.nan, math.nan, math.nan, confidence)
    z = NormalDist().inv_cdf(0.5 + confidence / 2.0)
    p = successes / total
    denominator = 1.0 + z * z / total
    centre = (p + z * z / (2 * total)) / denominator
    half = z * math.sqrt(p * (1 - p) / total + z * z / (4 * total * total)) / denominator
    return Proportion(successes, total, p, max(0.0, centre - half), min(1.0, centre + half),
                      confidence)
