"""The class-correlation outputs of a served head: which classes an input is confused with.

For the top classes of one input (ids [B, k]) a head reports two different things:

1. ``topk_correlation`` [B, k, k], the correlation of the LATENT logits among the top classes
   (the quantity of Collier et al., CVPR 2021). For a softmax head (``het``, ``het_pe``,
   ``het_xl``) only the centred covariance ``Sigma_c = C Sigma C``, ``C = I - 1 1^T / K``, is
   identifiable (``softmax(u + c 1) = softmax(u)``: ``V`` and ``V + 1 a^T`` predict the same);
   the sigmoid head (``het_sigmoid``) has no shift invariance and uses Sigma itself
   (``correlation_rule``). This says how the logits co-vary, whatever their probability.

2. ``confusable_ids`` / ``confusable_share`` [B, k, m]: per top class i, the m other classes
   its PROBABILITY moves to under the model's learned noise. With the sampled probabilities
   ``p_s = link(u_s / tau)`` (the same samples that give p_bar) and their covariance
   ``C_ij = Cov_s(p_i, p_j)``:

       share_ij = max(0, -C_ij) / sum_{l != i} max(0, -C_il)      (softmax heads)

   the part of class i's probability movement that class j takes: ``-C_ij > 0`` when j's
   probability rises as i's falls. The shares lie in [0, 1] and sum to 1 over the others.
   When no class moves WITH i (the usual case for the top class) the denominator is exactly
   ``Var_s(p_i)`` (``sum_j p_j = 1`` gives ``sum_{l != i} -C_il = Var_s(p_i)``), so the share is
   the slope of p_j on p_i: the noise lowering class i's probability by delta raises class j's
   by ``share_ij * delta`` on average. (The plain slope ``-C_ij / Var_s(p_i)`` is unbounded for
   a class the noise hardly moves: measured on the demo model it reached several hundred for
   the 4th and 5th top classes, whose probability is ~1e-5, so it is not what is served.) The
   confusable classes are the m others with the largest share. For the sigmoid head
   (independent labels) ``share_ij = max(0, C_ij) / sum_{l != i} max(0, C_il)``: how label i's
   co-movement splits over the labels that rise with it (co-occurring labels).

   Where ``Var_s(p_i) <= PROBABILITY_VARIANCE_FLOOR`` (std 0.001: the noise does not move
   class i; always so for a deterministic head) every share of i is 0: no claim of confusion.

   Where the samples cannot place class i's movement, its shares are withheld: served as
   ``WITHHELD_SHARE`` (-1) instead of a number. A class's movement under the noise is often
   carried by a few samples (a confident top class loses probability only in the tail, a
   low-probability class gains it in a few spikes), and the few samples decide where it goes.
   Measured on the demo model against the exact integral, the shares' 99th-percentile error
   was 0.42 with its 128 fitted points, 0.29 with 1,000 plain Monte Carlo samples and still
   0.13 with 4,096 moment-matched ones: more samples alone do not fix it, and neither did
   fitting the bank's points to the covariances (better on the fit images, worse on others).
   Withheld (``withheld_shares``) when either standard error, both from the samples, is too
   large:

   * the relative standard error of ``Var_s(p_i)`` (``sqrt(1 / n_eff - 1 / S)``, n_eff the
     number of samples that carry the movement) exceeds ``MOVEMENT_RELATIVE_ERROR_MAX``;
   * a share's own standard error, half the difference between the shares over the bank's two
     halves (two independent estimates of S/2 samples each), exceeds
     ``SHARE_STANDARD_ERROR_MAX`` for some class.

Why not the latent correlation for (2): per input, a strongly negative centred correlation
says that two logits move against each other, but not that the other class has any
probability to gain. On the demo model the most negative centred correlation named a class of
the same noisy group for 80 % of group images, the runner-up of p_bar for 99.3 %, and the
covariance of the sampled probabilities for 99.7 % (``hetexport.studies.claims`` measures both).

Everything works on rows [B, k, K], never on [B, K, K].

Typical usage::

    rule = correlation_rule(head.link)
    out = head(features, noise=bank)                        # out.sample_probs [B, S, K]
    outputs = correlation_outputs(out.latent, out.sample_probs, topk_ids,
                                  num_confusable=3, rule=rule)
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from hetcontract import WITHHELD_SHARE
from torch import Tensor

from hetexport.layers import LatentGaussian, batch_invariant

MOVEMENT_RELATIVE_ERROR_MAX = 0.30
"""Largest relative standard error of ``Var_s(p_i)`` at which class i's shares are served
(about 10 samples or more carry its movement; module doc)."""
SHARE_STANDARD_ERROR_MAX = 0.075
"""Largest standard error of a share (from the bank's halves) at which it is served."""
PROBABILITY_VARIANCE_FLOOR = 1e-6
"""``Var_s(p_i)`` at or below this (a standard deviation of 0.1 percentage point) counts as
"the noise does not move class i": its shares are 0. Where a class's probability moves less,
where it moves to is noise of the samples, not a property of the model."""


class CorrelationRule(NamedTuple):
    """How a head's correlation outputs are formed.

    ``centered``: the latent correlation is that of ``C Sigma C`` (True) or of Sigma (False).
    ``most_negative``: confusable classes are those whose sampled probability moves AGAINST the
    class's (True: softmax, probability moves from one class to another) or WITH it (False:
    sigmoid, co-occurring labels). The same sign ranked the latent correlation before the
    probability shares replaced it (``latent_confusable_ids``).
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
    """``topk_correlation`` [B, k, k]; ``confusable_ids`` int64 and ``confusable_share``
    [B, k, m]."""

    topk_correlation: Tensor
    confusable_ids: Tensor
    confusable_share: Tensor


def probability_covariance_rows(sample_probs: Tensor, topk_ids: Tensor) -> Tensor:
    """``Cov_s(p_i, p_j)`` for the top classes i: samples [B, S, K], ids [B, k] -> [B, k, K].

    Centred first (``(1/S) sum_s (p_si - p_bar_i)(p_sj - p_bar_j)``) so that a small variance
    is not lost to cancellation in float32. The top columns are picked by a product with their
    one-hot indicator [B, K, k] (exact: each entry is one value times 1 plus zeros), cheaper
    in ONNX Runtime than a gather over [B, S, K].
    """
    samples = sample_probs.shape[1]
    centred = sample_probs - batch_invariant.per_sample(
        batch_invariant.mean(sample_probs, 1), sample_probs.shape[1])  # [B, S, K]
    classes = torch.arange(sample_probs.shape[-1], device=topk_ids.device)
    pick = (classes.unsqueeze(-1) == topk_ids.unsqueeze(1)).to(sample_probs.dtype)  # [B, K, k]
    top = torch.matmul(centred, pick)  # the top columns [B, S, k]
    return torch.matmul(top.transpose(1, 2), centred) / samples  # [B, k, K]


def shares_from_covariance(cov_rows: Tensor, topk_ids: Tensor, *, rule: CorrelationRule) -> Tensor:
    """Shares [B, k, K] from covariance rows [B, k, K] (module doc, item 2):
    ``max(0, -/+ C_ij) / sum_{l != i} max(0, -/+ C_il)``, 0 at ``j = i`` and wherever
    ``Var(p_i) <= PROBABILITY_VARIANCE_FLOOR`` or no class moves against (softmax) / with
    (sigmoid) class i."""
    own = torch.gather(cov_rows, 2, topk_ids.unsqueeze(-1))  # Var(p_i) [B, k, 1]
    is_self = _is_self(topk_ids, cov_rows.shape[-1])  # [B, k, K]
    signed = -cov_rows if rule.most_negative else cov_rows
    flows = torch.where(is_self, 0.0, torch.clamp(signed, min=0.0))
    total = batch_invariant.sum(flows, -1).unsqueeze(-1)  # [B, k, 1]
    moving = (own > PROBABILITY_VARIANCE_FLOOR) & (total > 0)
    safe = torch.where(moving, total, 1.0)
    return torch.where(moving, flows / safe, 0.0)


def probability_shares(sample_probs: Tensor, topk_ids: Tensor, *, rule: CorrelationRule) -> Tensor:
    """Shares [B, k, K] of each top class's probability movement (module doc, item 2), from
    the sampled probabilities [B, S, K]."""
    return shares_from_covariance(probability_covariance_rows(sample_probs, topk_ids), topk_ids,
                                  rule=rule)


def confusable_from_shares(shares: Tensor, topk_ids: Tensor, num_confusable: int
                           ) -> tuple[Tensor, Tensor]:
    """The m other classes with the largest share, and their shares: ([B, k, m], [B, k, m]).

    The class itself is never its own confusable class; ties (the many exact zeros of the
    positive part, a deterministic head's zeros) go to the lowest ids in PyTorch and ONNX
    Runtime alike: exported, ONNX ``TopK`` puts the lower index first among equal values;
    eager (the PyTorch reference, the fused GPU head), a stable descending sort does the same,
    where ``torch.topk`` promises no order (the sort does not export to ONNX)."""
    scores = torch.where(_is_self(topk_ids, shares.shape[-1]), float("-inf"), shares)
    if torch.onnx.is_in_onnx_export():
        ids = torch.topk(scores, num_confusable, dim=-1).indices
    else:
        ids = torch.sort(scores, dim=-1, descending=True, stable=True).indices
        ids = ids[..., :num_confusable]
    return ids, torch.gather(shares, 2, ids)


class ShareEstimate(NamedTuple):
    """The shares [B, k, K] of the covariance over all samples, and per top class [B, k]
    whether it moves (``moving``) and the two standard errors that decide whether its shares
    are withheld (module doc, item 2): ``variance_error`` and ``share_error``."""

    shares: Tensor
    moving: Tensor
    variance_error: Tensor
    share_error: Tensor

    @property
    def withheld(self) -> Tensor:
        """[B, k]: True where a moving class's shares fail either standard error."""
        unsure = ((self.variance_error > MOVEMENT_RELATIVE_ERROR_MAX)
                  | (self.share_error > SHARE_STANDARD_ERROR_MAX))
        return self.moving & unsure

    def margin(self) -> Tensor:
        """[B, k]: relative distance of the nearer standard error to its limit (a float32
        rounding can only flip ``withheld`` where this is tiny)."""
        return torch.minimum(
            torch.abs(self.variance_error / MOVEMENT_RELATIVE_ERROR_MAX - 1.0),
            torch.abs(self.share_error / SHARE_STANDARD_ERROR_MAX - 1.0),
        )


def share_estimate(rows: Tensor, half_rows: Tensor, variance_error: Tensor, topk_ids: Tensor,
                   *, rule: CorrelationRule) -> ShareEstimate:
    """Shares and their standard errors from covariance rows over all samples [B, k, K] and
    over each half of the bank [B, 2, k, K], and the relative standard error of each top
    class's ``Var_s(p_i)`` [B, k]. A share's standard error is half the largest difference
    between the two halves' shares of class i."""
    k = int(topk_ids.shape[1])
    stacked = torch.cat([rows, half_rows[:, 0], half_rows[:, 1]], 1)  # [B, 3k, K]: one pass
    every = shares_from_covariance(stacked, torch.cat([topk_ids] * 3, 1), rule=rule)
    shares, first, second = every[:, :k], every[:, k:2 * k], every[:, 2 * k:]
    spread = torch.abs(first - second).amax(-1) * 0.5
    return ShareEstimate(shares, shares.amax(-1) > 0, variance_error, spread)


def withheld_shares(estimate: ShareEstimate, topk_ids: Tensor, *, num_confusable: int
                    ) -> tuple[Tensor, Tensor]:
    """The served ``confusable_ids`` and ``confusable_share`` [B, k, m]: the m others with the
    largest share, ``WITHHELD_SHARE`` for every one of a withheld top class."""
    ids, values = confusable_from_shares(estimate.shares, topk_ids, num_confusable)
    return ids, torch.where(estimate.withheld.unsqueeze(-1), WITHHELD_SHARE, values)


def topk_correlation(latent: LatentGaussian, topk_ids: Tensor, *, rule: CorrelationRule
                     ) -> Tensor:
    """The latent correlation among the top classes [B, k, k] (module doc, item 1)."""
    rows = latent.correlation_rows(topk_ids, centered=rule.centered)  # [B, k, K]
    columns = _is_self(topk_ids, rows.shape[-1]).to(rows.dtype)  # [B, k, K]
    return torch.matmul(rows, columns.transpose(1, 2))  # the top columns, picked exactly


def _is_self(ids: Tensor, classes: int) -> Tensor:
    """``[B, k, K]``, True at each row's own class ``ids[b, i]`` (a comparison with a constant
    range: no gather, no shape computation in the traced graph)."""
    return ids.unsqueeze(-1) == torch.arange(int(classes), device=ids.device)


def correlation_outputs(
    latent: LatentGaussian,
    sample_probs: Tensor,
    topk_ids: Tensor,
    *,
    num_confusable: int,
    rule: CorrelationRule,
) -> CorrelationOutputs:
    """The three correlation outputs for the top classes ``topk_ids`` [B, k] (module doc)."""
    shares = probability_shares(sample_probs, topk_ids, rule=rule)
    ids, values = confusable_from_shares(shares, topk_ids, num_confusable)
    return CorrelationOutputs(topk_correlation(latent, topk_ids, rule=rule), ids, values)


def latent_confusable_ids(
    latent: LatentGaussian, topk_ids: Tensor, *, num_confusable: int, rule: CorrelationRule
) -> Tensor:
    """The confusable classes as served before the probability shares: the m others with the
    most negative (softmax, centred) or most positive (sigmoid, raw) LATENT correlation
    [B, k, m]. Kept to measure the old definition against the new one
    (``hetexport.studies.claims``)."""
    rows = latent.correlation_rows(topk_ids, centered=rule.centered)
    scores = -rows if rule.most_negative else rows
    ids, _ = confusable_from_shares(scores, topk_ids, num_confusable)
    return ids
