"""The module that is exported to ONNX: images -> the outputs of ``hetcontract.HEAD_OUTPUTS``.

It wraps a trained ``HetClassifier`` with a fixed noise bank (common random numbers, shared
by every example, so an example's answer does not depend on its batch) and computes, per
example (B = batch, K classes, k = ``top_k``, m = ``num_confusable``), from the latent
Gaussian of the head and one pass over the bank's samples (``sample_statistics``):

* ``probs`` p_bar [B, K] = (1/S) sum_s link(u_s / tau), u_s = mu + V z_R[s] + d * z_K[s]
  with z_R = ``noise_factors`` [S, R] and z_K = ``noise_diag`` [S, K] (ONNX initializers);
* ``predictive_entropy`` H[p_bar], ``expected_entropy`` (1/S) sum_s H[link(u_s / tau)] and
  ``mutual_information`` = their difference, floored at 0 (it is >= 0 by concavity, up to
  rounding). Softmax heads use the categorical entropy; the sigmoid head the sum of K
  Bernoulli entropies (see ``hetexport.layers.entropy``);
* ``topk_ids`` / ``topk_probs`` [B, k]: classes by p_bar;
* ``topk_correlation`` [B, k, k]: the LATENT correlation ``S_ij / sqrt(S_ii S_jj)`` among the
  top classes, from rows
  of S for the top classes only ([B, k, K], never [B, K, K]). ``Sigma = V V^T + diag(d^2)``
  (HET-XL: ``W (V' V'^T + diag(d'^2)) W^T``). Softmax heads use the centred
  ``S = C Sigma C``, ``C = I - 1 1^T / K`` (a common shift of all logits does not change a
  softmax, so Sigma's all-ones component is never learned); the sigmoid head uses S = Sigma;
* ``confusable_ids`` / ``confusable_share`` [B, k, m]: per top class i, the m OTHER classes
  (self excluded) with the largest share of its probability movement under the noise, from the
  same samples ``p_s = link(u_s / tau)`` that give p_bar, with ``C = Cov_s(p)``:
  ``share_ij = max(0, -C_ij) / sum_{l != i} max(0, -C_il)`` (softmax heads; ``+C`` for the
  sigmoid head), 0 where ``Var_s(p_i)`` is below ``PROBABILITY_VARIANCE_FLOOR``, and
  ``WITHHELD_SHARE`` (-1) where the samples cannot place class i's movement (its standard
  errors too large). See ``hetexport.class_correlation`` for the rule and its math.

* ``latent_probs`` [B, K] (optional in the contract, ``hetcontract.OPTIONAL_HEAD_OUTPUTS``):
  the noise-free class distribution ``link(mu / tau)`` of the latent mean, the label audit's
  clean-class posterior. A row-wise ``Softmax`` (the sigmoid head: a two-entry softmax per
  class, as ``mc_sigmoid`` does), so batch-invariant like the rest; it is not computed from
  the samples and costs O(B K).

A deterministic head gives the identity correlation, confusable shares 0 (ids: the ties' order,
the lowest other ids), expected == predictive entropy, MI 0.
A HET-XL head (``het_xl``) draws its diagonal noise on the D pre-logits: its ``noise_diag`` is
z_D [S, D] and ``u_s = mu + V z_R[s] + (d' * z_D[s]) W^T`` with V = W V'.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from hetcontract import HEAD_OUTPUTS, OPTIONAL_HEAD_OUTPUTS
from torch import Tensor, nn

from hetexport.class_correlation import (
    CorrelationRule,
    ShareEstimate,
    correlation_rule,
    share_estimate,
    topk_correlation,
    withheld_shares,
)
from hetexport.layers import LatentGaussian, NoiseBank, mc_sigmoid
from hetexport.model import HetClassifier
from hetexport.serving.sample_statistics import (
    SampleStatistics,
    bank_halves,
    deterministic_statistics,
    sampled_statistics,
    softmax_statistics,
    tempered_samples,
)

__all__ = ["OUTPUT_NAMES", "ServingGraph", "ServingOutputs"]


class ServingOutputs(NamedTuple):
    """The graph's outputs, in ``hetcontract.HEAD_OUTPUTS`` order."""

    topk_ids: Tensor
    topk_probs: Tensor
    predictive_entropy: Tensor
    expected_entropy: Tensor
    mutual_information: Tensor
    topk_correlation: Tensor
    confusable_ids: Tensor
    confusable_share: Tensor
    probs: Tensor
    latent_probs: Tensor


OUTPUT_NAMES: tuple[str, ...] = tuple(
    spec.name.value for spec in (*HEAD_OUTPUTS, *OPTIONAL_HEAD_OUTPUTS)
)
assert ServingOutputs._fields == OUTPUT_NAMES, (
    "ServingOutputs must follow HEAD_OUTPUTS, then OPTIONAL_HEAD_OUTPUTS"
)


class ServingGraph(nn.Module):
    """``images [B, C, H, W] -> ServingOutputs`` with a baked, batch-shared noise bank.

    The bank is registered as buffers ``noise_factors`` [S, R] and ``noise_diag`` [S, K]
    ([S, D] for HET-XL), which become ONNX initializers of the same names (a deterministic
    head has none).
    """

    def __init__(
        self, model: HetClassifier, *, noise: NoiseBank | None, top_k: int, num_confusable: int
    ) -> None:
        super().__init__()
        head = model.head
        classes = head.num_classes
        if not 1 <= top_k <= classes:
            raise ValueError(f"top_k must be in 1..{classes}, got {top_k}")
        if not 1 <= num_confusable <= classes - 1:
            raise ValueError(f"num_confusable must be in 1..{classes - 1}, got {num_confusable}")
        self.model = model
        self.top_k = top_k
        self.num_confusable = num_confusable
        self.stochastic = head.kind != "det"
        self.correlation_rule: CorrelationRule = correlation_rule(head.link)
        if self.stochastic:
            if noise is None or not noise.shared:
                raise ValueError("a HET head exports with a shared noise bank ([S, R], [S, K])")
            width = head.diag_noise_dim
            if noise.num_classes != width or noise.num_factors != head.num_factors:
                raise ValueError(
                    f"noise bank is for R={noise.num_factors}, diagonal width "
                    f"{noise.num_classes}; the head needs R={head.num_factors}, diagonal width "
                    f"{width}"
                )
            self.register_buffer("noise_factors", noise.factor_noise.float().clone())
            self.register_buffer("noise_diag", noise.diag_noise.float().clone())
            self.halves = bank_halves(self.noise_bank())  # a constant of the traced graph

    def noise_bank(self) -> NoiseBank | None:
        if not self.stochastic:
            return None
        return NoiseBank(self.noise_factors, self.noise_diag)

    def statistics(self, images: Tensor) -> tuple[SampleStatistics, LatentGaussian]:
        """One pass over the bank's samples (``sample_statistics``) and the latent Gaussian."""
        head = self.model.head
        latent = head.latent(self.model.backbone(images))
        tau = head.temperature()
        if not self.stochastic:
            return deterministic_statistics(latent.mean / tau, top_k=self.top_k), latent
        bank = self.noise_bank()
        if head.link == "softmax":
            scaled = tempered_samples(latent, bank, tau)
            return softmax_statistics(scaled, top_k=self.top_k, halves=self.halves), latent
        average = mc_sigmoid(latent, bank, tau)
        return sampled_statistics(average.sample_probs, average.probs, average.expected_entropy,
                                  average.predictive_entropy, top_k=self.top_k,
                                  halves=self.halves), latent

    def shares(self, stats: SampleStatistics) -> ShareEstimate:
        """The top classes' shares and their standard errors (``class_correlation``)."""
        move = stats.movement
        return share_estimate(move.rows, move.half_rows, move.variance_error, stats.topk_ids,
                              rule=self.correlation_rule)

    def sampled_probabilities(self, images: Tensor) -> Tensor:
        """``link(u_s / tau)`` [B, S, K] of the bank's samples ([B, 1, K] for a deterministic
        head): what p_bar averages, for checks."""
        head = self.model.head
        latent = head.latent(self.model.backbone(images))
        tau = head.temperature()
        if not self.stochastic:
            return torch.softmax(latent.mean / tau, -1).unsqueeze(1)
        if head.link == "softmax":
            return torch.softmax(tempered_samples(latent, self.noise_bank(), tau), -1)
        return mc_sigmoid(latent, self.noise_bank(), tau).sample_probs

    def forward(self, images: Tensor) -> ServingOutputs:
        stats, latent = self.statistics(images)
        mutual = torch.clamp(stats.predictive_entropy - stats.expected_entropy, min=0.0)
        ids, shares = withheld_shares(self.shares(stats), stats.topk_ids,
                                      num_confusable=self.num_confusable)
        return ServingOutputs(
            topk_ids=stats.topk_ids,
            topk_probs=stats.topk_probs,
            predictive_entropy=stats.predictive_entropy,
            expected_entropy=stats.expected_entropy,
            mutual_information=mutual,
            topk_correlation=topk_correlation(latent, stats.topk_ids, rule=self.correlation_rule),
            confusable_ids=ids,
            confusable_share=shares,
            probs=stats.probs,
            latent_probs=latent_link(latent.mean, self.model.head.temperature(),
                                     link=self.model.head.link),
        )


def latent_link(mean: Tensor, temperature: Tensor | float, *, link: str) -> Tensor:
    """``link(mu / tau)`` [B, K] on row-wise softmaxes: ``softmax(mu / tau)``, or for the
    sigmoid link ``sigmoid(x) = softmax([0, x])_1`` per class."""
    scaled = mean / temperature
    if link == "sigmoid":
        pair = torch.stack((torch.zeros_like(scaled), scaled), dim=-1)
        return torch.softmax(pair, dim=-1)[..., 1]
    return torch.softmax(scaled, dim=-1)
