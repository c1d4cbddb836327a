"""Which labels are wrong: the label audit's scoring, shared by ``hetclient audit`` (served
model) and ``hetexport audit`` (k-fold models), so both write the same rows.

Needs numpy (``pip install 'hetcontract[audit]'``); nothing else in ``hetcontract`` does.

Typical usage::

    from hetcontract.audit_scoring import score_labels

    scores = score_labels(given, clean_probs=latent_probs, noisy_probs=probs)
    scores.wrong            # [N] P(given label is wrong | image, given label)
    scores.flagged          # [N] wrong > threshold (0.5: the Bayes decision)
    scores.wrong_share      # the estimated share of wrong labels in the set

The model (a noisy channel fitted to the audited set, Dawid and Skene 1979 with one
annotator). An image x has a true class y drawn from the model's NOISE-FREE class
distribution ``c(x)`` and was given the label ``g`` through a class-conditional channel::

    P(g | y) = (1 - rho) [g == y] + rho Q[y, g],     Q[y, y] = 0, sum_g Q[y, g] = 1

``rho`` is the share of wrong labels and ``Q[y, :]`` where the wrong labels of true class y
go. Both are unknown and are fitted by expectation-maximisation on the audited set itself
(the same data, no labels beyond the given ones), with weak priors: rho ~ Beta around
``PRIOR_WRONG_SHARE`` worth ``PRIOR_WRONG_WEIGHT`` images, each row of Q ~ Dirichlet uniform
over the other classes worth ``TRANSITION_PRIOR_WEIGHT`` images. The E-step's posterior of
the true class is ``P(y | x, g) ∝ c_y(x) P(g | y)``, and the score of an image is
``P(wrong | x, g) = 1 - P(y = g | x, g)``. A label is flagged when that exceeds the
threshold (0.5 by default: flag what is more likely wrong than right); the estimated share of
wrong labels is the mean score (``rho`` at the fixed point).

What a HET model adds. Its p_bar was trained on noisy labels: it is the distribution of the
label a (noisy) annotator would give, so an ambiguous but correctly labelled image looks as
"suspicious" under p_bar as a mislabelled one. The latent mean's ``softmax(mu / tau)`` (served
as ``latent_probs``) has that learned noise taken out; it is ``c(x)`` here. A plain softmax
model has only its probabilities, which carry the training labels' noise: ``c(x) = p`` then
(and the audit says so: ``source = "probs"``).

The kind of problem of a flagged label (``kind``): ``confusion`` when the model's noisy
distribution gives the given label a real chance for this image (``p_bar_g(x) >=
CONFUSION_MIN_PROB``: the learned label noise explains how an annotator got to it: the
suggested class is the one it was confused with); ``outlier`` when not even the noise explains
it (a label far from anything the model connects with the image, or an image unlike its
class).
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from hetcontract.audit import DEFAULT_THRESHOLD, AuditRow, AuditSummary, summarize

__all__ = ["DEFAULT_THRESHOLD", "LabelScores", "NoisyChannel", "fit_noisy_channel", "run_audit",
           "score_labels"]

PRIOR_WRONG_SHARE = 0.1
"""Prior mean of the share of wrong labels."""
PRIOR_WRONG_WEIGHT = 2.0
"""How many images that prior is worth (a weak prior: 2,000 images outweigh it 1000:1)."""
TRANSITION_PRIOR_WEIGHT = 5.0
"""Each row of Q starts uniform over the other classes, worth this many wrong labels."""
CONFUSION_MIN_PROB = 0.05
"""A flagged label is a ``confusion`` when the noisy p_bar gives it at least this much."""
EM_MAX_ITERATIONS = 200
EM_TOLERANCE = 1e-7
"""EM stops when no image's P(wrong) moved by more than this."""
PROB_FLOOR = 1e-12
"""Probabilities are floored here before normalising (a served float32 0 stays a tiny > 0)."""

KIND_OK = "ok"
KIND_CONFUSION = "confusion"
KIND_OUTLIER = "outlier"
KINDS = (KIND_OK, KIND_CONFUSION, KIND_OUTLIER)


class NoisyChannel(NamedTuple):
    """The fitted channel: ``wrong_share`` rho and ``transition`` Q [K, K] (zero diagonal,
    rows sum to 1: where the wrong labels of each true class go), and the posterior of the
    true class ``true_class`` [N, K]; ``iterations`` EM ran."""

    wrong_share: float
    transition: np.ndarray
    true_class: np.ndarray
    iterations: int


class LabelScores(NamedTuple):
    """Per image (N): ``wrong`` P(label wrong | x, g); ``flagged`` wrong > threshold;
    ``suggested`` the most likely true class other than the given one where flagged, else
    the given label; ``kind`` one of ``KINDS``. ``channel`` the fitted noisy channel;
    ``source`` which distribution was the noise-free ``c(x)`` (``latent_probs`` or
    ``probs``)."""

    wrong: np.ndarray
    flagged: np.ndarray
    suggested: np.ndarray
    kind: np.ndarray
    channel: NoisyChannel
    source: str

    @property
    def wrong_share(self) -> float:
        """The estimated share of wrong labels: the mean P(wrong)."""
        return float(self.wrong.mean()) if len(self.wrong) else 0.0


def normalized(probs: np.ndarray) -> np.ndarray:
    """Rows floored at ``PROB_FLOOR`` and rescaled to sum to 1, float64 [N, K]."""
    array = np.maximum(np.asarray(probs, dtype=np.float64), PROB_FLOOR)
    if array.ndim != 2:
        raise ValueError(f"probabilities must be [N, K], got shape {array.shape}")
    return array / array.sum(axis=1, keepdims=True)


def fit_noisy_channel(
    clean_probs: np.ndarray,
    given: np.ndarray,
    *,
    max_iterations: int = EM_MAX_ITERATIONS,
    tolerance: float = EM_TOLERANCE,
) -> NoisyChannel:
    """EM for rho and Q of ``P(g | y) = (1 - rho)[g == y] + rho Q[y, g]`` (module doc) given
    the noise-free class distributions ``clean_probs`` [N, K] and the given labels [N].

    E-step: ``r[n, y] ∝ c_y(x_n) P(g_n | y)``. M-step (MAP): ``rho = (sum_n (1 - r[n, g_n])
    + a b) / (N + b)`` with a = ``PRIOR_WRONG_SHARE``, b = ``PRIOR_WRONG_WEIGHT``;
    ``Q[y, j] = (sum_{n: g_n = j} r[n, y] + t / (K - 1)) / (sum_{n: g_n != y} r[n, y] + t)``
    for j != y, t = ``TRANSITION_PRIOR_WEIGHT``."""
    probs = normalized(clean_probs)
    labels = _labels(given, probs.shape)
    count, classes = probs.shape
    others = (1.0 - np.eye(classes)) / (classes - 1)
    transition = others.copy()
    wrong_share = PRIOR_WRONG_SHARE
    rows = np.arange(count)
    previous = np.full(count, np.inf)
    iterations = 0
    posterior = probs
    for iterations in range(1, max_iterations + 1):  # noqa: B007 - reported
        likelihood = wrong_share * transition[:, labels].T  # [N, K]: P(g_n | y), y != g_n
        likelihood[rows, labels] = 1.0 - wrong_share
        posterior = probs * likelihood
        posterior /= posterior.sum(axis=1, keepdims=True)
        wrong = 1.0 - posterior[rows, labels]
        wrong_share = (wrong.sum() + PRIOR_WRONG_SHARE * PRIOR_WRONG_WEIGHT) / (
            count + PRIOR_WRONG_WEIGHT
        )
        moved = np.zeros((classes, classes))  # [y, g]: expected images of class y labelled g
        np.add.at(moved.T, labels, posterior)
        np.fill_diagonal(moved, 0.0)
        transition = (moved + TRANSITION_PRIOR_WEIGHT * others) / (
            moved.sum(axis=1, keepdims=True) + TRANSITION_PRIOR_WEIGHT
        )
        if np.max(np.abs(wrong - previous)) < tolerance:
            break
        previous = wrong
    return NoisyChannel(float(wrong_share), transition, posterior, iterations)


def score_labels(
    given: np.ndarray,
    *,
    clean_probs: np.ndarray | None,
    noisy_probs: np.ndarray,
    threshold: float = DEFAULT_THRESHOLD,
) -> LabelScores:
    """Score every given label (module doc). ``clean_probs`` is the model's noise-free class
    distribution (a HET model's ``latent_probs``); None for a model that has none, whose
    ``noisy_probs`` (p_bar, or a plain softmax) then stand in for it. ``noisy_probs`` also
    decides the kind of problem."""
    if not 0.0 < threshold < 1.0:
        raise ValueError(f"threshold must be in (0, 1), got {threshold}")
    noisy = normalized(noisy_probs)
    source = "probs" if clean_probs is None else "latent_probs"
    clean = noisy if clean_probs is None else normalized(clean_probs)
    if clean.shape != noisy.shape:
        raise ValueError(f"latent_probs {clean.shape} and probs {noisy.shape} differ in shape")
    labels = _labels(given, noisy.shape)
    channel = fit_noisy_channel(clean, labels)
    rows = np.arange(len(labels))
    wrong = 1.0 - channel.true_class[rows, labels]
    flagged = wrong > threshold
    alternatives = channel.true_class.copy()
    alternatives[rows, labels] = -1.0
    suggested = np.where(flagged, alternatives.argmax(axis=1), labels)
    explained = noisy[rows, labels] >= CONFUSION_MIN_PROB
    kind = np.where(~flagged, KIND_OK, np.where(explained, KIND_CONFUSION, KIND_OUTLIER))
    return LabelScores(wrong, flagged, suggested, kind, channel, source)


def _labels(given: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    labels = np.asarray(given, dtype=np.int64)
    if labels.shape != (shape[0],):
        raise ValueError(f"{labels.shape[0] if labels.ndim else 0} labels for {shape[0]} images")
    if labels.size and (labels.min() < 0 or labels.max() >= shape[1]):
        raise ValueError(f"labels must be class ids in 0..{shape[1] - 1}")
    return labels


def audit_rows(
    paths: list[str],
    given: np.ndarray,
    labels: list[str],
    scores: LabelScores,
    *,
    noisy_probs: np.ndarray,
    clean_probs: np.ndarray | None,
) -> list[AuditRow]:
    """One ``AuditRow`` per image, in input order, from its scores and probabilities."""
    given = np.asarray(given, dtype=np.int64)
    noisy = np.asarray(noisy_probs, dtype=np.float64).tolist()
    clean = None if clean_probs is None else np.asarray(clean_probs, dtype=np.float64).tolist()
    return [
        AuditRow(
            path=path,
            given_label=labels[int(given[n])],
            given_id=int(given[n]),
            suggested_label=labels[int(scores.suggested[n])],
            suggested_id=int(scores.suggested[n]),
            score=min(1.0, max(0.0, float(scores.wrong[n]))),
            flagged=bool(scores.flagged[n]),
            kind=str(scores.kind[n]),
            probs=noisy[n],
            latent_probs=None if clean is None else clean[n],
        )
        for n, path in enumerate(paths)
    ]


def run_audit(
    paths: list[str],
    given: np.ndarray,
    labels: list[str],
    *,
    noisy_probs: np.ndarray,
    clean_probs: np.ndarray | None,
    model: str,
    threshold: float = DEFAULT_THRESHOLD,
) -> tuple[list[AuditRow], AuditSummary]:
    """Score the labels and lay the result out as the audit's rows and summary."""
    scores = score_labels(given, clean_probs=clean_probs, noisy_probs=noisy_probs,
                          threshold=threshold)
    rows = audit_rows(paths, given, labels, scores, noisy_probs=noisy_probs,
                      clean_probs=clean_probs)
    return rows, summarize(rows, labels, model=model, source=scores.source, threshold=threshold)
