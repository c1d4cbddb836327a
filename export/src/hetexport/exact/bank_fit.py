"""A noise bank fitted to a model's latents: learned quadrature for the baked Monte Carlo head.

A baked bank's error is a fixed function of the input, so its points may be chosen for the
integrands the model actually produces. ``fit_bank`` keeps the structure that makes a bank
exact on low-order terms and fits the rest:

* fixed: the bank is antithetic and whitened. With S/2 free points ``Y`` [S/2, d]
  (d = R + N), ``Z = [Y; -Y] L^{-T}`` where ``L L^T = Y^T Y / (S/2)`` (Cholesky), so the
  bank's mean is exactly 0 (every odd moment too) and its second moment ``Z^T Z / S`` is
  exactly I: the linear and quadratic terms of ``link(u / tau)`` around mu integrate exactly,
  whatever ``Y`` is. A whitened start (``moment_matched_sobol``) has ``L = I``: the fit starts
  at that bank, bit for bit up to rounding.
* fitted: ``Y``, by Adam (fixed step size and iteration count, float64, one thread:
  deterministic) minimising, over FIT images' latent Gaussians ``N(mu_b, Sigma_b)``,

      loss(Y) = mean(e^2) + mean(e^4) / scale^2

  where e runs over every served integral's error against the exact reference of those
  images: ``p_bar[b, k] - p*[b, k]`` for every class, the expected entropy
  ``mean_s H[link(u_bs / tau)] - E*[H]``, the predictive entropy ``H[p_bar] - H[p*]`` and the
  mutual information (their difference) per image. Probabilities and nats are of the same
  size here (plain MC with S = 1000 errs by ~1e-2 in both), so they are not reweighted;
  ``scale`` (``TAIL_SCALE``, about the target 99th percentile) makes the L4 term weigh the
  tail: an image whose error is above it counts more than the mean.

The fit sees only its own images; judge the bank on others (``hetexport.exact.measure``).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from hetexport.exact.integral import ExactAnswer
from hetexport.exact.measure import Reference
from hetexport.layers import LatentGaussian, NoiseBank, mc_sigmoid, mc_softmax
from hetexport.layers.entropy import bernoulli_entropy, categorical_entropy
from hetexport.layers.noise_bank import moment_matched_sobol_design, whiten_blocks

FIT_STEPS = 400
"""Adam iterations (fixed: the fit is deterministic)."""
FIT_LEARNING_RATE = 0.01
"""Adam step size, in units of a standard normal coordinate."""
FIT_MAX_ENTRIES = 1 << 24
"""The fit holds its images' samples [images, S, K] in float64 with their gradients: at most
this many entries (128 MiB a tensor), so a large K fits on the first
``FIT_MAX_ENTRIES // (S K)`` images only (a K = 1000 head at S = 256: 65 images)."""
TAIL_SCALE = 0.02
"""Error size at which the L4 (tail) term weighs as much as the squared error (module doc)."""


@dataclass(frozen=True)
class BankFit:
    """The fitted bank, the loss before and after and the number of images it was fitted on
    (``FIT_MAX_ENTRIES`` may leave some out)."""

    bank: NoiseBank
    initial_loss: float
    final_loss: float
    images: int = 0


def whitened_antithetic(half: Tensor, factors: int = 0) -> Tensor:
    """``[Y; -Y] L^{-T}`` with ``L L^T = Y^T Y / (S/2)``: mean 0, second moment exactly I
    (module doc); differentiable in ``Y`` [S/2, d]. With S/2 <= d (Y cannot have full column
    rank) whitened block by block instead (``noise_bank.whiten_blocks``: the ``factors``
    first columns exactly, each other column orthogonal to them with second moment 1)."""
    if half.shape[0] <= half.shape[1]:
        white = whiten_blocks(half, factors)
        return torch.cat([white, -white])
    second = half.T @ half / half.shape[0]
    lower = torch.linalg.cholesky(second)
    white = torch.linalg.solve_triangular(lower, half.T, upper=False).T  # Y L^{-T}
    return torch.cat([white, -white])


def bank_loss(points: Tensor, latent: LatentGaussian, exact: ExactAnswer, temperature: float,
              *, link: str, factors: int) -> Tensor:
    """The fit's loss (module doc) of the bank ``points`` [S, R + N] on ``latent``."""
    errors = served_integral_errors(points, latent, exact, temperature, link=link,
                                    factors=factors)
    return errors.square().mean() + errors.pow(4).mean() / TAIL_SCALE**2


def served_integral_errors(points: Tensor, latent: LatentGaussian, exact: ExactAnswer,
                           temperature: float, *, link: str, factors: int) -> Tensor:
    """Signed errors [B, K + 3] of the bank's p_bar (every class), expected entropy,
    predictive entropy and mutual information against ``exact``."""
    bank = NoiseBank(points[:, :factors], points[:, factors:])
    average = (mc_softmax if link == "softmax" else mc_sigmoid)(latent, bank, temperature)
    entropy_of = categorical_entropy if link == "softmax" else bernoulli_entropy
    probs = average.probs
    predictive = entropy_of(probs.clamp(min=0))
    expected = average.expected_entropy
    columns = [
        probs - exact.probs,
        (expected - exact.expected_entropy).unsqueeze(1),
        (predictive - exact.predictive_entropy).unsqueeze(1),
        ((predictive - expected) - exact.mutual_information).unsqueeze(1),
    ]
    return torch.cat(columns, 1)


def fit_bank(
    reference: Reference,
    *,
    samples: int,
    seed: int,
    steps: int = FIT_STEPS,
    learning_rate: float = FIT_LEARNING_RATE,
) -> BankFit:
    """A bank of ``samples`` points fitted to the integrals of ``reference``'s latents
    (module doc: the FIT images), started from ``moment_matched_sobol`` with ``seed``.
    ValueError unless S is even with S/2 > R."""
    factors, width = reference.latent.num_factors, reference.latent.diag_noise_dim
    if samples % 2:
        raise ValueError(f"a fitted bank is antithetic: S must be even, got {samples}")
    count = max(2, FIT_MAX_ENTRIES // (samples * reference.latent.num_classes))
    reference = reference.subset(slice(0, count))
    latent, exact = reference.latent, reference.exact
    temperature, link = reference.temperature, reference.link
    wide = latent.detached_float64()
    start = moment_matched_sobol_design(samples, factors, width, seed)
    half = start[: samples // 2].clone().requires_grad_(True)
    optimiser = torch.optim.Adam([half], lr=learning_rate)

    def loss() -> Tensor:
        return bank_loss(whitened_antithetic(half, factors), wide, exact, temperature, link=link,
                         factors=factors)

    with torch.no_grad():
        initial = float(loss())
    for _ in range(steps):
        optimiser.zero_grad()
        value = loss()
        value.backward()
        optimiser.step()
    with torch.no_grad():
        points = whitened_antithetic(half, factors)
        final = float(loss())
    bank = NoiseBank(points[:, :factors].float().contiguous(),
                     points[:, factors:].float().contiguous())
    return BankFit(bank, initial, final, latent.batch_size)
