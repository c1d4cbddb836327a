"""The label audit's scoring (``hetcontract.audit_scoring``): a noisy channel fitted by EM."""

from __future__ import annotations

import numpy as np
import pytest
from hetcontract.audit_scoring import (
    CONFUSION_MIN_PROB,
    PRIOR_WRONG_SHARE,
    fit_noisy_channel,
    normalized,
    score_labels,
)

K = 5


def confident_set(n: int, wrong_rate: float, *, seed: int = 0, confidence: float = 0.999,
                  calibrated: bool = False):
    """Images whose noise-free distribution puts ``confidence`` on one class, the rest evenly;
    their true class is that class, or (``calibrated``) drawn from the distribution; a share
    ``wrong_rate`` of them labelled with another class than the true one."""
    rng = np.random.default_rng(seed)
    top = rng.integers(0, K, n)
    probs = np.full((n, K), (1 - confidence) / (K - 1))
    probs[np.arange(n), top] = confidence
    truth = np.array([rng.choice(K, p=row) for row in probs]) if calibrated else top
    given = truth.copy()
    wrong = rng.random(n) < wrong_rate
    given[wrong] = (truth[wrong] + rng.integers(1, K, wrong.sum())) % K
    return probs, given, wrong


@pytest.mark.parametrize("confidence", [0.8, 0.95])
def test_em_recovers_the_share_of_wrong_labels_of_a_calibrated_model(confidence):
    probs, given, wrong = confident_set(8000, 0.15, confidence=confidence, seed=1,
                                        calibrated=True)
    scores = score_labels(given, clean_probs=probs, noisy_probs=probs)
    assert scores.wrong_share == pytest.approx(wrong.mean(), abs=0.02)
    assert scores.wrong[wrong].mean() > scores.wrong[~wrong].mean() + 0.3


def test_a_confident_model_flags_exactly_the_wrong_labels():
    probs, given, wrong = confident_set(4000, 0.15)
    scores = score_labels(given, clean_probs=probs, noisy_probs=probs)
    assert scores.wrong_share == pytest.approx(wrong.mean(), abs=0.01)
    assert scores.channel.wrong_share == pytest.approx(wrong.mean(), abs=0.01)
    np.testing.assert_array_equal(scores.flagged, wrong)
    assert (scores.suggested[wrong] != given[wrong]).all()
    np.testing.assert_array_equal(scores.suggested[~wrong], given[~wrong])


def test_a_clean_set_is_estimated_clean():
    probs, given, _ = confident_set(3000, 0.0)
    scores = score_labels(given, clean_probs=probs, noisy_probs=probs)
    assert scores.wrong_share < 0.01 and not scores.flagged.any()


def test_the_transition_learns_where_wrong_labels_go():
    """Every wrong label of class 0 is 1: Q's row 0 puts its mass on class 1."""
    rng = np.random.default_rng(3)
    truth = rng.integers(0, K, 5000)
    probs = np.full((5000, K), 0.025)
    probs[np.arange(5000), truth] = 0.9
    given = truth.copy()
    flip = (truth == 0) & (rng.random(5000) < 0.3)
    given[flip] = 1
    channel = fit_noisy_channel(probs, given)
    assert channel.transition[0, 1] > 0.9
    np.testing.assert_allclose(channel.transition.sum(1), 1.0)
    assert np.all(np.diag(channel.transition) == 0)


def test_posterior_is_bayes_rule_at_the_fitted_channel():
    """P(y | x, g) = c_y P(g | y) / sum_y' c_y' P(g | y') with the channel EM returns."""
    probs, given, _ = confident_set(500, 0.2, seed=5, confidence=0.7)
    channel = fit_noisy_channel(probs, given)
    rho, q = channel.wrong_share, channel.transition
    likelihood = rho * q[:, given].T
    likelihood[np.arange(500), given] = 1 - rho
    expected = probs * likelihood
    expected /= expected.sum(1, keepdims=True)
    np.testing.assert_allclose(channel.true_class, expected, atol=1e-5)


def test_kind_is_confusion_where_the_noisy_probabilities_explain_the_label():
    probs, given, wrong = confident_set(2000, 0.1, seed=7)
    noisy = probs.copy()
    explained = wrong & (np.arange(2000) % 2 == 0)
    noisy[explained, given[explained]] = 0.3  # the learned noise gives these labels weight
    noisy[wrong & ~explained, given[wrong & ~explained]] = CONFUSION_MIN_PROB / 10
    scores = score_labels(given, clean_probs=probs, noisy_probs=noisy)
    assert set(scores.kind[explained]) == {"confusion"}
    assert set(scores.kind[wrong & ~explained]) == {"outlier"}
    assert set(scores.kind[~wrong]) == {"ok"}


def test_without_latent_probs_the_noisy_probabilities_stand_in():
    probs, given, _ = confident_set(300, 0.1)
    scores = score_labels(given, clean_probs=None, noisy_probs=probs)
    assert scores.source == "probs"
    assert score_labels(given, clean_probs=probs, noisy_probs=probs).source == "latent_probs"


def test_the_prior_keeps_a_tiny_set_from_degenerate_estimates():
    probs, given, _ = confident_set(3, 0.0)
    channel = fit_noisy_channel(probs, given)
    assert 0 < channel.wrong_share < PRIOR_WRONG_SHARE


@pytest.mark.parametrize(
    ("given", "probs", "message"),
    [
        (np.array([0, 1]), np.full((3, K), 0.2), "labels for 3 images"),
        (np.array([0, K]), np.full((2, K), 0.2), "class ids"),
        (np.array([0, 1]), np.full((2, K, 1), 0.2), r"\[N, K\]"),
    ],
)
def test_bad_inputs_are_value_errors(given, probs, message):
    with pytest.raises(ValueError, match=message):
        score_labels(given, clean_probs=None, noisy_probs=probs)


def test_threshold_must_be_a_probability():
    probs, given, _ = confident_set(10, 0.0)
    with pytest.raises(ValueError, match="threshold"):
        score_labels(given, clean_probs=None, noisy_probs=probs, threshold=1.0)


def test_normalized_floors_zeros_and_sums_rows_to_one():
    rows = normalized(np.array([[0.0, 2.0], [1.0, 1.0]], dtype=np.float32))
    assert rows.dtype == np.float64 and (rows > 0).all()
    np.testing.assert_allclose(rows.sum(1), 1.0)
