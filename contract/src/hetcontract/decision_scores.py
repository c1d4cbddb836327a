"""The scores decisions are made on: one definition for the exporter that calibrates them and
the gateway that applies them, so that a threshold means the same thing on both sides.

Typical usage::

    from hetcontract.decision_scores import confidence, set_scores

    sets = set_scores(probs, "lac") <= threshold           # [B, K] bool: the prediction sets
    accept = confidence(outputs, "max_probability") >= t   # [B] bool: accept or send to review
    sets = set_membership(probs, card.calibration.prediction_sets.chosen(0.9))  # from a card
    accept = accepted(outputs, card.calibration.abstention.at(0.05))

Needs numpy (the ``scores`` extra of hetcontract); the rest of hetcontract does not import this
module, so the SDK carries no numpy. Every function works on a batch (first axis) and in
float64, whatever the graph's dtype.

Conformal (non-conformity) scores of class y for an input with MC-averaged probabilities
``p`` (lower is more plausible; the set at threshold q is ``{y : s(x, y) <= q}``, the rule of
TorchCP's ``BasePredictor._generate_prediction_set``):

* ``lac`` (least ambiguous set-valued classifier, Sadinle et al. 2019; TorchCP's THR):
  ``s = 1 - p_y``;
* ``aps`` (adaptive prediction sets, Romano et al. 2020, not randomised): the probability mass
  of the classes ranked at or above y, ``s = sum_{j : rank(j) <= rank(y)} p_j`` (ranks by
  decreasing p, ties by class id);
* ``raps`` (regularised APS, Angelopoulos et al. 2021): APS plus ``penalty * max(0, rank(y) -
  k_reg)``, rank counted from 1 (TorchCP's RAPS).

Confidence scores (higher is more confident; an input is accepted when its score is at least
the calibrated threshold). The first four use only ``p_bar``; the others use what a
heteroscedastic model knows beyond it (for a deterministic model they equal or degenerate to
the first ones, so the exporter offers them for HET heads only):

* ``max_probability``: ``max_k p_k``;
* ``margin``: the top probability minus the runner-up's;
* ``top_ratio``: ``p_(1) / p_(2)``, how many times likelier the top class is than the
  runner-up (for a plain softmax, the exponential of the top two logits' gap over the
  temperature); it does not saturate near 1 as the probabilities do. Thresholds only compare,
  so this ranks inputs exactly as the log-probability margin would, without a logarithm;
* ``negative_entropy``: ``-H[p_bar]``;
* ``negative_expected_entropy``: minus the mean entropy of the MC samples (the noise the model
  expects in the label itself);
* ``negative_mutual_information``: minus ``H[p_bar] - E_s H[p_s]`` (how much the learned noise
  moves the answer);
* ``confusable_margin``: the top probability minus the probability of the classes it is
  confused with (the top class's ``confusable_ids`` whose share is at least
  ``MIN_CONFUSABLE_SHARE``): the margin against the classes the learned noise names rather
  than against the runner-up alone.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import get_args

import numpy as np

from hetcontract.api import MIN_CONFUSABLE_SHARE
from hetcontract.calibration import (
    ConfidenceScoreName,
    RiskThreshold,
    SetMethod,
    SetThresholds,
)
from hetcontract.outputs import OutputName

SET_SCORES: tuple[str, ...] = get_args(SetMethod)
CONFIDENCE_SCORES: tuple[str, ...] = get_args(ConfidenceScoreName)
PLAIN_CONFIDENCE_SCORES: tuple[str, ...] = (
    "max_probability", "margin", "top_ratio", "negative_entropy")
"""The confidence scores that use only ``p_bar``: the candidates for a deterministic head."""

CONFIDENCE_OUTPUTS: dict[str, tuple[str, ...]] = {
    "max_probability": (OutputName.TOPK_PROBS.value,),
    "margin": (OutputName.TOPK_PROBS.value,),
    "top_ratio": (OutputName.TOPK_PROBS.value,),
    "negative_entropy": (OutputName.PREDICTIVE_ENTROPY.value,),
    "negative_expected_entropy": (OutputName.EXPECTED_ENTROPY.value,),
    "negative_mutual_information": (OutputName.MUTUAL_INFORMATION.value,),
    "confusable_margin": (
        OutputName.TOPK_PROBS.value,
        OutputName.PROBS.value,
        OutputName.CONFUSABLE_IDS.value,
        OutputName.CONFUSABLE_SHARE.value,
    ),
}
"""The graph outputs each confidence score is computed from."""
SMALLEST_PROBABILITY = 1e-30
"""Probabilities are clipped here before they divide (float32 underflows below ~1e-38)."""


def set_scores(
    probs: np.ndarray, method: str, *, penalty: float = 0.0, k_reg: int = 0
) -> np.ndarray:
    """Non-conformity score of every class, float64 [B, K], from probabilities [B, K]."""
    p = np.asarray(probs, dtype=np.float64)
    if method == "lac":
        return 1.0 - p
    if method not in ("aps", "raps"):
        raise ValueError(f"unknown set score {method!r}; expected one of {SET_SCORES}")
    order = np.argsort(-p, axis=1, kind="stable")
    mass = np.cumsum(np.take_along_axis(p, order, axis=1), axis=1)
    if method == "raps" and penalty:
        ranks = np.arange(1, p.shape[1] + 1)
        mass += penalty * np.maximum(ranks - k_reg, 0)
    scores = np.empty_like(mass)
    np.put_along_axis(scores, order, mass, axis=1)
    return scores


def label_scores(
    probs: np.ndarray, labels: np.ndarray, method: str, *, penalty: float = 0.0,
    k_reg: int = 0,
) -> np.ndarray:
    """Non-conformity score of each input's label, float64 [B]."""
    scores = set_scores(probs, method, penalty=penalty, k_reg=k_reg)
    return scores[np.arange(scores.shape[0]), np.asarray(labels, dtype=np.int64)]


_PROBS = OutputName.PROBS.value
_TOPK_PROBS = OutputName.TOPK_PROBS.value
_CONFUSABLE_IDS = OutputName.CONFUSABLE_IDS.value
_CONFUSABLE_SHARE = OutputName.CONFUSABLE_SHARE.value
_NEGATED = {
    "negative_entropy": OutputName.PREDICTIVE_ENTROPY.value,
    "negative_expected_entropy": OutputName.EXPECTED_ENTROPY.value,
    "negative_mutual_information": OutputName.MUTUAL_INFORMATION.value,
}
"""The scores that are minus one graph output [B]."""


def confidence(outputs: Mapping[str, np.ndarray], score: str) -> np.ndarray:
    """The confidence score ``score`` of each input, float64 [B], from the graph's outputs
    (batch first; only ``CONFIDENCE_OUTPUTS[score]`` are read)."""
    negated = _NEGATED.get(score)
    if negated is not None:
        return -np.asarray(outputs[negated], dtype=np.float64).reshape(-1)
    if score not in CONFIDENCE_OUTPUTS:
        raise ValueError(f"unknown confidence score {score!r}; expected one of "
                         f"{CONFIDENCE_SCORES}")
    top = np.asarray(outputs[_TOPK_PROBS], dtype=np.float64)
    if score == "max_probability":
        return top[:, 0]
    if score == "top_ratio":
        runner_up = top[:, 1] if top.shape[1] > 1 else 1.0 - top[:, 0]  # k_max = 1: the rest
        return top[:, 0] / np.maximum(runner_up, SMALLEST_PROBABILITY)
    if score == "margin":
        return top[:, 0] - top[:, 1] if top.shape[1] > 1 else top[:, 0]
    return top[:, 0] - _confusable_mass(outputs)


def _confusable_mass(outputs: Mapping[str, np.ndarray]) -> np.ndarray:
    """Per input, the summed probability of the classes the top class is confused with (share
    at least ``MIN_CONFUSABLE_SHARE``)."""
    probs = np.asarray(outputs[_PROBS], dtype=np.float64)
    batch = probs.shape[0]
    ids = np.asarray(outputs[_CONFUSABLE_IDS]).reshape(batch, -1)
    shares = np.asarray(outputs[_CONFUSABLE_SHARE]).reshape(batch, -1)
    m = ids.shape[1] // np.shape(outputs[_TOPK_PROBS])[-1]
    named = shares[:, :m] >= MIN_CONFUSABLE_SHARE
    return (np.take_along_axis(probs, ids[:, :m].astype(np.int64), axis=1) * named).sum(axis=1)


def threshold_array(thresholds: Sequence[float | None]) -> np.ndarray:
    """A calibration's thresholds as float64, None (infinite) as ``inf``."""
    return np.array([np.inf if t is None else t for t in thresholds], dtype=np.float64)


def set_membership(probs: np.ndarray, row: SetThresholds) -> np.ndarray:
    """Bool [B, K]: class k is in input b's prediction set under ``row`` (one threshold for
    every class, or one per class)."""
    scores = set_scores(probs, row.method, penalty=row.penalty, k_reg=row.k_reg)
    return scores <= threshold_array(row.thresholds)


def accepted(outputs: Mapping[str, np.ndarray], rule: RiskThreshold) -> np.ndarray:
    """Bool [B]: the answer is accepted under ``rule`` (its confidence score at least the
    threshold; a rule without a threshold accepts nothing)."""
    scores = confidence(outputs, rule.score)
    if rule.threshold is None:
        return np.zeros(scores.shape, dtype=bool)
    return scores >= rule.threshold
