"""The class-correlation outputs of a served head: which classes the label noise ties together.

For the top classes of one input (ids [B, k]) a head reports ``topk_correlation`` [B, k, k]
and, per top class, ``confusable_ids`` / ``confusable_correlation`` [B, k, m]. What
"correlation" and "confusable" mean depends on the head's link (``correlation_rule``):

* softmax (``het``, ``het_pe``, ``het_xl``): ``softmax(u + c 1) = softmax(u)``, so the
  likelihood never sees the all-ones direction of the latent logits: ``V`` and ``V + 1 a^T``
  predict the same, and the raw ``Sigma_ij / sqrt(Sigma_ii Sigma_jj)`` carries a common
  component that training never fixed. The identifiable part is the centred covariance
  ``Sigma_c = C Sigma C``, ``C = I - 1 1^T / K`` (``LatentGaussian.centered_covariance_rows``),
  and the correlation is formed from it. A class's confusable classes are the m others with
  the most NEGATIVE centred correlation: when the noise raises its logit relative to the rest
  it lowers theirs, i.e. probability mass moves between them. Values are reported as they are
  (negative). Rows of ``Sigma_c`` sum to 0, so centred correlations lean negative on average.
* sigmoid (``het_sigmoid``): each class has its own Bernoulli, no shift invariance; the raw
  correlation, and the m others with the most POSITIVE one (labels that co-occur).
* deterministic (``det``, softmax link, Sigma = 0): the identity correlation, and confusable
  correlations all 0; every other class ties, so ``confusable_ids`` are simply the ids that
  ``topk`` returns for equal scores (the lowest other ids, in both PyTorch and ONNX Runtime).

The class itself is never in its own confusable list. Everything works on rows [B, k, K] of
the correlation, never on [B, K, K].

Typical usage::

    rule = correlation_rule(head.link)
    outputs = correlation_outputs(latent, topk_ids, num_confusable=3, rule=rule)
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor

from hetexport.layers import LatentGaussian

SELF_CORRELATION_MASK = -2.0
"""Below any confusability score (a correlation or its negation, in [-1, 1]): excludes a class
from its own confusable list."""


class CorrelationRule(NamedTuple):
    """How a head's correlation outputs are formed.

    ``centered``: correlation of ``C Sigma C`` (True) or of Sigma (False).
    ``most_negative``: confusable classes are the most negatively (True) or most positively
    (False) correlated others.
    """

    centered: bool
    most_negative: bool


SOFTMAX_RULE = CorrelationRule(centered=True, most_negative=True)
SIGMOID_RULE = CorrelationRule(centered=False, most_negative=False)
_RULES = {"softmax": SOFTMAX_RULE, "sigmoid": SIGMOID_RULE}


def correlation_rule(link: str) -> CorrelationRule:
    """The rule for a head's link function (``"softmax"`` or ``"sigmoid"``)."""
    try:
        return _RULES[link]
    except KeyError:
        known = sorted(_RULES)
        raise ValueError(f"no correlation rule for link {link!r}; known: {known}") from None


class CorrelationOutputs(NamedTuple):
    """``topk_correlation`` [B, k, k]; ``confusable_ids`` int64 and ``confusable_correlation``
    [B, k, m]."""

    topk_correlation: Tensor
    confusable_ids: Tensor
    confusable_correlation: Tensor


def confusability_scores(rows: Tensor, topk_ids: Tensor, *, rule: CorrelationRule) -> Tensor:
    """Correlation rows [B, k, K] -> scores [B, k, K], larger = more confusable: the
    correlation (most positive rule) or its negation (most negative rule), and
    ``SELF_CORRELATION_MASK`` at each row's own class."""
    scores = -rows if rule.most_negative else rows
    classes = torch.arange(rows.shape[-1], device=rows.device)
    is_self = topk_ids.unsqueeze(-1) == classes  # [B, k, K]
    return torch.where(is_self, torch.full_like(scores, SELF_CORRELATION_MASK), scores)


def correlation_outputs(
    latent: LatentGaussian, topk_ids: Tensor, *, num_confusable: int, rule: CorrelationRule
) -> CorrelationOutputs:
    """The three correlation outputs for the top classes ``topk_ids`` [B, k] (module doc)."""
    rows = latent.correlation_rows(topk_ids, centered=rule.centered)  # [B, k, K]
    k = topk_ids.shape[1]
    topk_corr = torch.gather(rows, 2, topk_ids.unsqueeze(1).expand(-1, k, -1))
    scores = confusability_scores(rows, topk_ids, rule=rule)
    conf_ids = torch.topk(scores, num_confusable, dim=-1).indices
    conf_corr = torch.gather(rows, 2, conf_ids)
    return CorrelationOutputs(topk_corr, conf_ids, conf_corr)
