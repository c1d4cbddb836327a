"""The exact answer a served HET head approximates, by a reference integrator far more precise.

The head serves ``p_bar = E[link(u / tau)]`` with ``u ~ N(mu, Sigma)`` and quantities built from
the same integral: the predictive entropy ``H[p_bar]``, the expected entropy
``E[H[link(u / tau)]]``, their difference (the mutual information) and the covariance of the
sampled probabilities ``Cov(p_i, p_j)`` behind the confusable shares. This module computes all
of them for each example by randomized quasi-Monte Carlo (RQMC) in the smallest space that
holds the integrand:

* softmax link: ``softmax(u) = softmax(C u)`` with ``C = I - 1 1^T / K``, so ``u`` may be drawn
  from ``N(mu, C Sigma C)``, of rank <= K - 1 (a K = 2 head is a 1-D integral);
* sigmoid link: ``N(mu, Sigma)``, rank <= K.

Per example the covariance is factored as ``Q diag(lambda) Q^T`` (eigenvalues descending) and
``u = mu + Q sqrt(lambda) Phi^{-1}(x)`` with ``x`` Owen-scrambled Sobol points: the leading
Sobol coordinates, the best equidistributed, carry the largest variance (the "PCA
construction"). ``replicas`` independent scramblings of ``points / replicas`` points each give
the estimate (their mean) and its own standard error (their standard deviation / sqrt(replicas)),
so the reference states how exact it is. Float64 throughout.

The eigenbasis has up to K - 1 dimensions and forms the K x K covariance per example, so it
serves K up to ``EIGEN_MAX_CLASSES``. Above that (a K = 1000 head, say) the integral is taken
in the noise's own R + N coordinates, ``u = mu + V z_R + d * z_K`` (HET-XL: ``(d' * z_D) W^T``),
an O(K (R + 1)) step per point instead of O(K^2): the points are scrambled Sobol normals and
their negations (antithetic), drawn chunk by chunk (pseudo-random beyond Sobol's 21201
dimensions), one scrambling per replica; ``probability_covariance`` (K x K) is not formed
(None: the confusable shares' error is then not measured).

Typical usage::

    latent = model.head.latent(model.backbone(images))
    exact = exact_answer(latent, temperature=0.5, link="softmax")
    exact.probs, exact.standard_error["probs"]                 # [B, K], [B]
"""

from __future__ import annotations

from typing import Literal, NamedTuple

import torch
from torch import Tensor

from hetexport.layers import LatentGaussian, bernoulli_entropy, categorical_entropy

Link = Literal["softmax", "sigmoid"]
REFERENCE_POINTS = 1 << 18
"""Points per example in all (the issue's reference: 2^18 randomized QMC points)."""
REFERENCE_REPLICAS = 8
"""Independent scramblings; their spread is the reference's own standard error."""
EIGEN_MAX_CLASSES = 64
"""Largest K integrated in the eigenbasis of the latent covariance (module doc)."""
EIGEN_CUTOFF = 1e-14
"""Eigenvalues below this fraction of the largest (or below 1e-300) are dropped as rounding."""
_OPEN_UNIT = 1e-15  # Sobol points are clamped into (0, 1) before the inverse normal CDF
_CHUNK_ELEMENTS = 1 << 22  # floats per [B, n, K] step (32 MiB in float64)


class ExactAnswer(NamedTuple):
    """The reference integrals for B examples (float64).

    Attributes:
        probs: ``E[link(u / tau)]`` [B, K].
        predictive_entropy: ``H[probs]`` [B] (categorical for softmax, summed Bernoulli for
            sigmoid).
        expected_entropy: ``E[H[link(u / tau)]]`` [B].
        mutual_information: their difference [B].
        probability_covariance: ``Cov(p_i, p_j)`` of ``p = link(u / tau)`` [B, K, K]; None
            above ``EIGEN_MAX_CLASSES`` classes.
        standard_error: the reference's own standard error per quantity, [B] each (for
            ``probs`` and ``probability_covariance`` the largest over entries).
    """

    probs: Tensor
    predictive_entropy: Tensor
    expected_entropy: Tensor
    mutual_information: Tensor
    probability_covariance: Tensor | None
    standard_error: dict[str, Tensor]


def exact_answer(
    latent: LatentGaussian,
    temperature: float,
    *,
    link: Link,
    points: int = REFERENCE_POINTS,
    replicas: int = REFERENCE_REPLICAS,
    seed: int = 0,
    space: Literal["auto", "eigen", "noise"] = "auto",
) -> ExactAnswer:
    """The reference integrals of ``latent`` (see module doc); ``points`` split over
    ``replicas`` independent scramblings; ``space``: the eigenbasis up to
    ``EIGEN_MAX_CLASSES`` classes and the noise's coordinates above (``"auto"``), or either."""
    if replicas < 2 or points % replicas:
        raise ValueError("need replicas >= 2 dividing points")
    if space == "noise" or (space == "auto" and latent.num_classes > EIGEN_MAX_CLASSES):
        wide = latent.detached_float64()
        estimates = [_noise_space_moments(wide, temperature, link=link,
                                          points=points // replicas, seed=seed + r)
                     for r in range(replicas)]
        return _combine(estimates, link=link)
    factor = integration_factor(latent, link=link)  # [B, K, r]
    mean = latent.mean.detach().double()
    estimates = [
        _replica_moments(mean, factor, temperature, link=link, points=points // replicas,
                         seed=seed + r)
        for r in range(replicas)
    ]
    return _combine(estimates, link=link)


def integration_factor(latent: LatentGaussian, *, link: Link) -> Tensor:
    """L [B, K, r] with ``L L^T`` = ``C Sigma C`` (softmax) or Sigma (sigmoid), columns by
    decreasing variance; r is the largest numerical rank in the batch."""
    with torch.no_grad():
        cov = latent.centered_covariance() if link == "softmax" else latent.covariance()
    cov = cov.detach().double()
    cov = (cov + cov.transpose(1, 2)) / 2
    values, vectors = torch.linalg.eigh(cov)  # ascending
    values, vectors = values.flip(-1), vectors.flip(-1)
    top = values[:, :1].clamp(min=1e-300)
    keep = values > EIGEN_CUTOFF * top
    rank = max(int(keep.sum(-1).max()), 1)
    scale = torch.where(keep, values, torch.zeros_like(values)).clamp(min=0).sqrt()
    return (vectors * scale.unsqueeze(1))[:, :, :rank]


def normal_points(count: int, dimension: int, *, seed: int) -> Tensor:
    """``count`` Owen-scrambled Sobol points in ``dimension`` dims mapped to N(0, I): [n, d]
    float64 (``Phi^{-1}`` of points clamped into the open unit cube)."""
    engine = torch.quasirandom.SobolEngine(dimension, scramble=True, seed=seed)
    uniform = engine.draw(count, dtype=torch.float64).clamp(_OPEN_UNIT, 1 - _OPEN_UNIT)
    return torch.special.ndtri(uniform)


class _Moments(NamedTuple):
    probs: Tensor  # [B, K]
    expected_entropy: Tensor  # [B]
    second: Tensor | None  # E[p p^T] [B, K, K]


def _replica_moments(mean: Tensor, factor: Tensor, temperature: float, *, link: Link,
                     points: int, seed: int) -> _Moments:
    batch, classes, rank = factor.shape
    z = normal_points(points, rank, seed=seed)  # the same points for every example
    probs = mean.new_zeros(batch, classes)
    entropy = mean.new_zeros(batch)
    second = mean.new_zeros(batch, classes, classes)
    step = max(1, _CHUNK_ELEMENTS // (batch * classes))
    for start in range(0, points, step):
        chunk = z[start:start + step]  # [n, r]
        u = mean.unsqueeze(1) + torch.einsum("nr,bkr->bnk", chunk, factor)
        scaled = u / temperature
        if link == "softmax":
            p = torch.softmax(scaled, -1)
            h = -(p * torch.log_softmax(scaled, -1)).sum(-1)
        else:
            p = torch.sigmoid(scaled)
            h = (torch.nn.functional.softplus(scaled) - scaled * p).sum(-1)
        probs += p.sum(1)
        entropy += h.sum(1)
        second += torch.matmul(p.transpose(1, 2), p)
    return _Moments(probs / points, entropy / points, second / points)


def _noise_space_moments(latent: LatentGaussian, temperature: float, *, link: Link,
                         points: int, seed: int) -> _Moments:
    """One replica in the noise's own coordinates (module doc): p_bar and the expected
    entropy, no second moments."""
    factors, width = latent.num_factors, latent.diag_noise_dim
    dimension = factors + width
    batch, classes = latent.mean.shape
    probs = latent.mean.new_zeros(batch, classes)
    entropy = latent.mean.new_zeros(batch)
    half_step = max(1, _CHUNK_ELEMENTS // (2 * batch * classes))
    draw = _normal_stream(dimension, seed)
    for start in range(0, points // 2, half_step):
        half = draw(min(half_step, points // 2 - start))
        chunk = torch.cat([half, -half])  # antithetic pairs
        u = (latent.project_factor_noise(chunk[:, :factors])
             + latent.project_diag_noise(chunk[:, factors:]) + latent.mean.unsqueeze(1))
        p, h = _link_and_entropy(u / temperature, link)
        probs += p.sum(1)
        entropy += h.sum(1)
    return _Moments(probs / points, entropy / points, None)


def _normal_stream(dimension: int, seed: int):
    """``draw(n)``: the next n standard normal points [n, d] (float64) of one scrambled Sobol
    sequence, or of a seeded generator beyond Sobol's dimensions."""
    if dimension <= torch.quasirandom.SobolEngine.MAXDIM:
        engine = torch.quasirandom.SobolEngine(dimension, scramble=True, seed=seed)
        return lambda n: torch.special.ndtri(
            engine.draw(n, dtype=torch.float64).clamp(_OPEN_UNIT, 1 - _OPEN_UNIT))
    generator = torch.Generator().manual_seed(seed)
    return lambda n: torch.randn(n, dimension, generator=generator, dtype=torch.float64)


def _link_and_entropy(scaled: Tensor, link: Link) -> tuple[Tensor, Tensor]:
    """``link(x)`` [B, n, K] and its entropy [B, n] (categorical or summed Bernoulli)."""
    if link == "softmax":
        log_p = torch.log_softmax(scaled, -1)
        p = log_p.exp()
        return p, -(p * log_p).sum(-1)
    p = torch.sigmoid(scaled)
    return p, (torch.nn.functional.softplus(scaled) - scaled * p).sum(-1)


def _combine(estimates: list[_Moments], *, link: Link) -> ExactAnswer:
    def stacked(field: str) -> Tensor:
        return torch.stack([getattr(e, field) for e in estimates])

    probs_r, entropy_r = stacked("probs"), stacked("expected_entropy")
    entropy_of = categorical_entropy if link == "softmax" else bernoulli_entropy
    predictive_r = entropy_of(probs_r)
    mutual_r = predictive_r - entropy_r
    probs = probs_r.mean(0)
    predictive = entropy_of(probs)
    expected = entropy_r.mean(0)
    n = len(estimates)

    def se(values: Tensor) -> Tensor:
        spread = values.std(0, unbiased=True) / n**0.5
        return spread.flatten(1).amax(1) if spread.dim() > 1 else spread

    standard_error = {
        "probs": se(probs_r),
        "predictive_entropy": se(predictive_r),
        "expected_entropy": se(entropy_r),
        "mutual_information": se(mutual_r),
    }
    covariance = None
    if estimates[0].second is not None:
        second_r = stacked("second")
        standard_error["probability_covariance"] = se(
            second_r - probs_r.unsqueeze(-1) * probs_r.unsqueeze(-2))
        covariance = second_r.mean(0) - probs.unsqueeze(-1) * probs.unsqueeze(-2)
    return ExactAnswer(
        probs=probs,
        predictive_entropy=predictive,
        expected_entropy=expected,
        mutual_information=predictive - expected,
        probability_covariance=covariance,
        standard_error=standard_error,
    )
