"""Top-1, NLL and ECE against values computed by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hetexport.metrics import (
    ECE_NUM_BINS,
    classification_metrics,
    expected_calibration_error,
    negative_log_likelihood,
    reliability_bins,
    top1_accuracy,
)

PROBS = np.array([
    [0.7, 0.2, 0.1],   # predicts 0, label 0: correct, confidence 0.7
    [0.1, 0.6, 0.3],   # predicts 1, label 2: wrong, confidence 0.6
    [0.05, 0.05, 0.9], # predicts 2, label 2: correct, confidence 0.9
    [0.5, 0.4, 0.1],   # predicts 0, label 1: wrong, confidence 0.5
])
LABELS = np.array([0, 2, 2, 1])


def test_top1_is_the_fraction_of_argmax_hits() -> None:
    assert top1_accuracy(PROBS, LABELS) == pytest.approx(0.5)


def test_nll_is_the_mean_negative_log_of_the_label_probability() -> None:
    expected = -(math.log(0.7) + math.log(0.3) + math.log(0.9) + math.log(0.4)) / 4
    assert negative_log_likelihood(PROBS, LABELS) == pytest.approx(expected)


def test_nll_clips_zero_probabilities_to_the_floor() -> None:
    probs = np.array([[1.0, 0.0]])
    assert negative_log_likelihood(probs, np.array([1])) == pytest.approx(-math.log(1e-7))


def test_ece_weighs_each_bins_confidence_accuracy_gap_by_its_size() -> None:
    # 15 bins of width 1/15: 0.5 -> bin 7, 0.6 -> bin 8, 0.7 -> bin 10, 0.9 -> bin 13;
    # one example each, so ECE = mean |1[correct] - confidence|.
    expected = (abs(1 - 0.7) + abs(0 - 0.6) + abs(1 - 0.9) + abs(0 - 0.5)) / 4
    assert expected_calibration_error(PROBS, LABELS) == pytest.approx(expected)


def test_examples_sharing_a_bin_are_averaged_before_the_gap() -> None:
    probs = np.array([[0.95, 0.05], [0.97, 0.03]])
    labels = np.array([0, 1])  # bin 14 holds both: accuracy 0.5, confidence 0.96
    assert expected_calibration_error(probs, labels) == pytest.approx(abs(0.5 - 0.96))


def test_reliability_bins_are_fifteen_equal_width_bins_by_default() -> None:
    bins = reliability_bins(PROBS, LABELS)
    assert ECE_NUM_BINS == 15
    assert np.allclose(bins.edges, np.linspace(0, 1, 16))
    assert bins.counts.sum() == 4 and bins.counts[[7, 8, 10, 13]].tolist() == [1, 1, 1, 1]
    assert np.isnan(bins.accuracy[0])


def test_a_perfectly_calibrated_confident_model_has_zero_ece_and_full_accuracy() -> None:
    probs = np.eye(3)[[0, 1, 2, 1]]
    scores = classification_metrics(probs, np.array([0, 1, 2, 1]))
    assert scores.top1 == 1.0 and scores.ece == pytest.approx(0.0)
    assert scores.nll == pytest.approx(0.0, abs=1e-12)


def test_mismatched_shapes_are_rejected() -> None:
    with pytest.raises(ValueError, match=r"probs \[N, K\]"):
        top1_accuracy(PROBS, LABELS[:3])
