"""Monte Carlo averages of the link function over latent logit samples (plain functions).

Collier et al., CVPR 2021: with ``u_s = mu(x) + V(x) z_R[s] + d(x) * z_K[s]`` (shapes
[B, S, K]) the prediction is ``p_bar = (1/S) sum_s link(u_s / tau)``, where link is the
softmax (one label) or the element-wise sigmoid (multi-label). The same samples also give the
expected entropy ``(1/S) sum_s H[link(u_s / tau)]``.

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

from hetexport.layers.entropy import sigmoid_entropy_from_logits, softmax_entropy_from_logits
from hetexport.layers.gaussian import LatentGaussian
from hetexport.layers.noise_bank import NoiseBank


class MCAverage(NamedTuple):
    """``probs`` p_bar [B, K] and ``expected_entropy`` [B] from S samples; ``sample_probs``
    the per-sample ``link(u_s / tau)`` [B, S, K] they average (None where a streaming engine
    never holds them)."""

    probs: Tensor
    expected_entropy: Tensor
    sample_probs: Tensor | None = None


def sample_logits(latent: LatentGaussian, noise: NoiseBank) -> Tensor:
    """Latent logit samples ``u_s = mu + V z_R[s] + d * z_K[s]`` -> [B, S, K].

    (HET-XL latent: ``u_s = mu + V z_R[s] + (d' * z_D[s]) W^T``, z_D from a [.., S, D] bank.)
    """
    _check_noise(latent, noise)
    low_rank = latent.project_factor_noise(noise.factor_noise)  # [B, S, K]
    diag = latent.project_diag_noise(noise.diag_noise)  # [B, S, K]
    return latent.mean.unsqueeze(1) + low_rank + diag


def mc_softmax(latent: LatentGaussian, noise: NoiseBank, temperature: Tensor) -> MCAverage:
    """``p_bar = mean_s softmax(u_s / tau)`` and ``mean_s H[softmax(u_s / tau)]``."""
    scaled = sample_logits(latent, noise) / temperature
    samples = torch.softmax(scaled, -1)
    return MCAverage(
        probs=samples.mean(1),
        expected_entropy=softmax_entropy_from_logits(scaled).mean(1),
        sample_probs=samples,
    )


def mc_sigmoid(latent: LatentGaussian, noise: NoiseBank, temperature: Tensor) -> MCAverage:
    """``p_bar = mean_s sigmoid(u_s / tau)`` and the mean summed Bernoulli entropy."""
    scaled = sample_logits(latent, noise) / temperature
    samples = torch.sigmoid(scaled)
    return MCAverage(
        probs=samples.mean(1),
        expected_entropy=sigmoid_entropy_from_logits(scaled).mean(1),
        sample_probs=samples,
    )


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
