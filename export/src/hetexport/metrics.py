"""Classification metrics on predicted probabilities: top-1, NLL, ECE, reliability bins.

Typical usage::

    from hetexport.metrics import classification_metrics

    scores = classification_metrics(probs, labels)   # probs [N, K] rows summing to 1, labels [N]
    scores.top1, scores.nll, scores.ece

All functions take numpy arrays (or anything ``np.asarray`` accepts) and return Python floats.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

ECE_NUM_BINS = 15
"""Equal-width confidence bins on [0, 1] for the expected calibration error (Guo et al. 2017)."""

NLL_PROBABILITY_FLOOR = 1e-7
"""Probabilities are clipped to [floor, 1] before the log, as the HET head's loss does."""


class Metrics(NamedTuple):
    """``top1`` accuracy in [0, 1], mean ``nll`` in nats, ``ece`` in [0, 1]."""

    top1: float
    nll: float
    ece: float

    def as_dict(self) -> dict[str, float]:
        return self._asdict()


class ReliabilityBins(NamedTuple):
    """Per confidence bin b (``num_bins`` of them): the bin edges ``[num_bins + 1]``, the number
    of examples, their mean confidence and their accuracy (NaN for empty bins)."""

    edges: np.ndarray
    counts: np.ndarray
    confidence: np.ndarray
    accuracy: np.ndarray


def _check(probs: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    probs = np.asarray(probs, dtype=np.float64)
    labels = np.asarray(labels, dtype=np.int64)
    if probs.ndim != 2 or labels.shape != (probs.shape[0],):
        raise ValueError(f"need probs [N, K] and labels [N], got {probs.shape} and {labels.shape}")
    if probs.shape[0] == 0:
        raise ValueError("metrics need at least one example")
    return probs, labels


def top1_accuracy(probs: np.ndarray, labels: np.ndarray) -> float:
    """Fraction of examples whose highest-probability class is the label."""
    probs, labels = _check(probs, labels)
    return float(np.mean(probs.argmax(axis=1) == labels))


def negative_log_likelihood(probs: np.ndarray, labels: np.ndarray) -> float:
    """``mean_n -log clip(p_n[y_n], NLL_PROBABILITY_FLOOR, 1)`` in nats."""
    probs, labels = _check(probs, labels)
    picked = probs[np.arange(labels.shape[0]), labels]
    return float(np.mean(-np.log(np.clip(picked, NLL_PROBABILITY_FLOOR, 1.0))))


def reliability_bins(
    probs: np.ndarray, labels: np.ndarray, *, num_bins: int = ECE_NUM_BINS
) -> ReliabilityBins:
    """Group examples by confidence ``c_n = max_k p_nk`` into equal-width bins
    ``(e_{b-1}, e_b]`` (the first bin also holds c = 0), with accuracy ``1[argmax = y]``."""
    probs, labels = _check(probs, labels)
    confidence = probs.max(axis=1)
    correct = (probs.argmax(axis=1) == labels).astype(np.float64)
    edges = np.linspace(0.0, 1.0, num_bins + 1)
    bin_index = np.clip(np.searchsorted(edges, confidence, side="left") - 1, 0, num_bins - 1)
    counts = np.bincount(bin_index, minlength=num_bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_confidence = np.bincount(bin_index, confidence, num_bins) / counts
        accuracy = np.bincount(bin_index, correct, num_bins) / counts
    return ReliabilityBins(edges, counts, mean_confidence, accuracy)


def expected_calibration_error(
    probs: np.ndarray, labels: np.ndarray, *, num_bins: int = ECE_NUM_BINS
) -> float:
    """``ECE = sum_b (n_b / N) |acc_b - conf_b|`` over ``num_bins`` equal-width bins of the
    top-1 confidence (empty bins contribute 0)."""
    bins = reliability_bins(probs, labels, num_bins=num_bins)
    filled = bins.counts > 0
    weights = bins.counts[filled] / bins.counts.sum()
    gaps = np.abs(bins.accuracy[filled] - bins.confidence[filled])
    return float(np.sum(weights * gaps))


def classification_metrics(probs: np.ndarray, labels: np.ndarray) -> Metrics:
    """Top-1, NLL and ECE (15 bins) of probabilities ``[N, K]`` against labels ``[N]``."""
    return Metrics(
        top1=top1_accuracy(probs, labels),
        nll=negative_log_likelihood(probs, labels),
        ece=expected_calibration_error(probs, labels),
    )
