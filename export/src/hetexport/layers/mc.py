"""Monte Carlo averages of the link function over latent logit samples (plain functions).

Collier et al., CVPR 2021: with ``u_s = mu(x) + V(x) z_R[s] + d(x) * z_K[s]`` (shapes
[B, S, K]) the prediction is ``p_bar = (1/S) sum_s link(u_s / tau)``, where link is the
softmax (one label) or the element-wise sigmoid (multi-label). The same samples also give the
expected entropy ``(1/S) sum_s H[link(u_s / tau)]``, and the predictive entropy ``H[p_bar]``.

Every average is taken with ``hetexport.layers.batch_invariant`` (a product with 1/S, and
``log p_bar`` as the log-mean-exp of the samples' log-probabilities, never a ``Log`` of
p_bar), so the exported graph gives an example the same bits in any batch. A sigmoid
(multi-label) sample is K independent two-class softmaxes over the logits (0, x_k): one
formula serves both links.

A HET-XL latent (diagonal noise in the D-dim pre-logit space) samples
``u_s = mu + V z_R[s] + (d' * z_D[s]) W^T`` instead; ``LatentGaussian.project_diag_noise``
holds the difference, so these functions serve both.

Typical usage::

    latent = head.latent(phi)
    noise = NoiseBank.draw(1000, latent.num_factors, latent.num_classes)
    avg = mc_softmax(latent, noise, torch.tensor(1.5))       # avg.probs [B, K]
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor

from hetexport.layers import batch_invariant
from hetexport.layers.gaussian import LatentGaussian
from hetexport.layers.noise_bank import NoiseBank


class MCAverage(NamedTuple):
    """``probs`` p_bar [B, K], ``expected_entropy`` and ``predictive_entropy`` H[p_bar] [B]
    from S samples; ``sample_probs`` the per-sample ``link(u_s / tau)`` [B, S, K] they average
    (None where a streaming engine never holds them)."""

    probs: Tensor
    expected_entropy: Tensor
    predictive_entropy: Tensor
    sample_probs: Tensor | None = None


def sample_logits(latent: LatentGaussian, noise: NoiseBank) -> Tensor:
    """Latent logit samples ``u_s = mu + V z_R[s] + d * z_K[s]`` -> [B, S, K].

    (HET-XL latent: ``u_s = mu + V z_R[s] + (d' * z_D[s]) W^T``, z_D from a [.., S, D] bank.)
    """
    _check_noise(latent, noise)
    low_rank = latent.project_factor_noise(noise.factor_noise)  # [B, S, K]
    diag = latent.project_diag_noise(noise.diag_noise)  # [B, S, K]
    return low_rank + diag + batch_invariant.per_sample(latent.mean, diag.shape[1])


def mc_softmax(latent: LatentGaussian, noise: NoiseBank, temperature: Tensor) -> MCAverage:
    """``p_bar = mean_s softmax(u_s / tau)``, ``mean_s H[softmax(u_s / tau)]`` and ``H[p_bar]``."""
    return softmax_average(sample_logits(_tempered(latent, temperature), noise))


def softmax_average(scaled: Tensor) -> MCAverage:
    """The softmax averages of logit samples ``x_s = u_s / tau`` [B, S, K] (S = 1: a plain
    softmax classifier, whose expected and predictive entropies coincide)."""
    return _categorical_average(torch.log_softmax(scaled, -1), torch.softmax(scaled, -1))


def mc_sigmoid(latent: LatentGaussian, noise: NoiseBank, temperature: Tensor) -> MCAverage:
    """``p_bar = mean_s sigmoid(u_s / tau)`` and the summed Bernoulli entropies: class k's
    label is a two-class softmax over the logits ``(0, x_k)``, so ``sigmoid(x_k)`` and
    ``1 - sigmoid(x_k)`` and their logs all come from one ``log_softmax`` row."""
    scaled = sample_logits(_tempered(latent, temperature), noise)
    pair = torch.stack((torch.zeros_like(scaled), scaled), dim=-1)  # [B, S, K, 2]: (no, yes)
    both = _categorical_average(
        torch.log_softmax(pair, -1).flatten(-2), torch.softmax(pair, -1).flatten(-2)
    )
    return MCAverage(
        probs=both.probs[..., 1::2],
        expected_entropy=both.expected_entropy,
        predictive_entropy=both.predictive_entropy,
        sample_probs=both.sample_probs[..., 1::2],
    )


def _categorical_average(log_samples: Tensor, samples: Tensor) -> MCAverage:
    """Averages over the sample axis 1 of ``samples`` [B, S, E] (entropy terms summed over E):
    ``p_bar = mean_s p_s``, ``log p_bar = log_mean_exp_s(log p_s)``,
    ``E[H] = mean_s -sum_e p_se log p_se``, ``H[p_bar] = -sum_e p_bar_e log p_bar_e``."""
    probs = batch_invariant.mean(samples, 1)
    log_probs = batch_invariant.log_mean_exp(log_samples, 1)
    mean_terms = batch_invariant.mean(samples * log_samples, 1)  # mean_s p_se log p_se [B, E]
    return MCAverage(
        probs=probs,
        expected_entropy=-batch_invariant.sum(mean_terms, -1),
        predictive_entropy=-batch_invariant.sum(probs * log_probs, -1),
        sample_probs=samples,
    )


def _tempered(latent: LatentGaussian, temperature: Tensor) -> LatentGaussian:
    """The latent of ``u / tau`` (``LatentGaussian.scaled``, 1 / tau in the latent's dtype)."""
    tau = torch.as_tensor(temperature, dtype=latent.mean.dtype, device=latent.mean.device)
    return latent.scaled(tau.reciprocal())


def _check_noise(latent: LatentGaussian, noise: NoiseBank) -> None:
    if noise.num_classes != latent.diag_noise_dim or noise.num_factors != latent.num_factors:
        raise ValueError(
            f"noise bank is for R={noise.num_factors}, diagonal width {noise.num_classes}; "
            f"the latent needs R={latent.num_factors}, diagonal width {latent.diag_noise_dim} "
            f"(K={latent.num_classes})"
        )
    if not noise.shared and noise.diag_noise.shape[0] != latent.batch_size:
        raise ValueError(
            f"per-example noise for {noise.diag_noise.shape[0]} examples, batch is "
            f"{latent.batch_size}"
        )
