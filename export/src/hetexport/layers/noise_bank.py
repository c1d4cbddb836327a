"""A bank of standard normals for Monte Carlo sampling of the latent logits.

``u_s = mu + V z_R[s] + d * z_K[s]`` with ``z_R[s] ~ N(0, I_R)`` and ``z_K[s] ~ N(0, I_K)``;
one noise draw per class in the diagonal part (the paper's [.., S, K], not the JAX
reference's [B, S, 1], which would make the diagonal term d d^T instead of diag(d^2)).

A HET-XL head (Collier et al., ICLR 2023) draws its diagonal noise in the D-dim pre-logit
space instead: its bank's ``diag_noise`` is z_D [S, D] (``num_classes`` then reads D, the
diagonal width; heads give it as ``head.diag_noise_dim``).

Baked banks (``NoiseBank.fixed``) are chosen for accuracy, not only drawn: a fixed bank's
error is a deterministic function of the input, so its points should integrate the smooth
``link(u / tau)`` as well as possible. Designs (``BANK_DESIGNS``), all as standard normals
``z = Phi^{-1}(x)`` of points ``x`` in the unit cube of dimension R + N (factor coordinates
first: they carry the correlated, usually larger, part of the noise):

* ``"normal"``: pseudo-random N(0, I) from PyTorch's CPU generator (plain Monte Carlo, error
  ~ 1/sqrt(S); the bank every export used before).
* ``"sobol"``: Owen-scrambled Sobol points (randomized quasi-Monte Carlo).
* ``"antithetic_sobol"``: S/2 scrambled Sobol points and their negations: every odd-order term
  of the integrand's expansion around mu integrates to exactly 0.
* ``"moment_matched_sobol"``: ``antithetic_sobol`` whitened so that the bank's sample mean is
  exactly 0 and its sample covariance exactly I: the first and second moments of the noise,
  hence the linear and quadratic terms of the integrand, are integrated exactly, besides all
  odd ones. With fewer pairs than dimensions (S/2 <= R + N: a K = 1000 head at S = 256, say)
  a second moment of I is impossible; the bank is whitened block by block instead
  (``whiten_blocks``): the factor coordinates exactly (needs S/2 > R), each diagonal
  coordinate orthogonal to them and of second moment exactly 1 (what is left are the products
  of two diagonal coordinates, about 1/sqrt(S/2) each). Beyond Sobol's 21201 dimensions the
  half points are pseudo-random normals, whitened the same way.
* ``"optimized"`` (``FITTED_DESIGN``, learned quadrature; not in ``BANK_DESIGNS``, since it
  depends on a model, not only on (S, R, N, seed)): ``moment_matched_sobol``'s structure kept
  exactly (S/2 points Y and their negations, whitened: ``Z = [Y; -Y] L^{-T}``,
  ``L L^T = Y^T Y / (S/2)``, so mean 0, every odd moment 0 and second moment I for any Y)
  while Y itself, started at the ``moment_matched_sobol`` bank of the given seed, is fitted
  by gradient descent to minimise the error of every served integral (p_bar of every class,
  expected and predictive entropy, mutual information) against the exact reference on a
  model's FIT images (an export's selection half of ``--error-images``). The fit is
  ``hetexport.exact.bank_fit.fit_bank``; ``NoiseBank.fixed`` cannot make it.
* ``"auto"`` (the export default, ``resolve_design``): ``moment_matched_sobol`` where S allows
  it (S even with S/2 > R), else ``sobol`` up to Sobol's largest dimension (21201), else
  ``normal``; with held-out images an export takes ``"auto"`` to mean ``"optimized"``
  (``hetexport.onnx.sampling_plan``). Measured against the exact integral in
  ``bench/uncertainty_cost.py`` and, on a model-free family of latents at K = 10 and 1000, in
  ``bench/default_samples.py`` (``hetexport.exact``).

Typical usage::

    noise = NoiseBank.draw(1000, num_factors=6, num_classes=10)        # shared by the batch
    noise = NoiseBank.draw(16, 6, 10, batch=32)                        # one set per example
    bank = NoiseBank.fixed(128, 6, 10, seed=0, design="moment_matched_sobol")  # an export's
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

AUTO_DESIGN = "auto"
FITTED_DESIGN = "optimized"
DEFAULT_BANK_DESIGN = AUTO_DESIGN
"""The design an export bakes unless told otherwise (``resolve_design``): the fitted bank with
held-out images, else moment-matched Sobol where S allows it, at the S a model-free criterion
chose (``hetexport.onnx.sampling_plan.DEFAULT_EXPORT_MC_SAMPLES``)."""
SOBOL_MAX_DIMENSION = torch.quasirandom.SobolEngine.MAXDIM
_OPEN_UNIT = 1e-7
"""Sobol points are clamped into (eps, 1 - eps) before ``Phi^{-1}`` (|z| <= 5.2)."""


@dataclass(frozen=True)
class NoiseBank:
    """Standard normals: ``factor_noise`` [S, R] or [B, S, R], ``diag_noise`` [S, K] or [B, S, K].

    Rank 2 tensors are shared by every example of a batch (common random numbers: an
    example's result does not depend on what else is in the batch); rank 3 tensors hold one
    set per example.
    """

    factor_noise: Tensor
    diag_noise: Tensor

    def __post_init__(self) -> None:
        if self.factor_noise.dim() != self.diag_noise.dim() or self.diag_noise.dim() not in (2, 3):
            raise ValueError(
                "factor_noise and diag_noise must both be [S, .] (shared) or [B, S, .] "
                f"(per example), got {tuple(self.factor_noise.shape)} and "
                f"{tuple(self.diag_noise.shape)}"
            )
        if self.factor_noise.shape[:-1] != self.diag_noise.shape[:-1]:
            raise ValueError("factor_noise and diag_noise disagree on the sample count")

    @property
    def num_samples(self) -> int:
        return int(self.diag_noise.shape[-2])

    @property
    def num_factors(self) -> int:
        return int(self.factor_noise.shape[-1])

    @property
    def num_classes(self) -> int:
        """Width of the diagonal noise: K, or D for a HET-XL (pre-logit noise) head."""
        return int(self.diag_noise.shape[-1])

    @property
    def shared(self) -> bool:
        """True when one set of samples serves the whole batch."""
        return self.diag_noise.dim() == 2

    @classmethod
    def draw(
        cls,
        num_samples: int,
        num_factors: int,
        num_classes: int,
        *,
        batch: int | None = None,
        generator: torch.Generator | None = None,
        device: torch.device | str | None = None,
        dtype: torch.dtype = torch.float32,
    ) -> NoiseBank:
        """Fresh standard normals; ``batch=None`` shares them across the batch."""
        if num_samples < 1:
            raise ValueError(f"num_samples must be >= 1, got {num_samples}")
        lead = () if batch is None else (batch,)
        options = {"generator": generator, "device": device, "dtype": dtype}
        return cls(
            factor_noise=torch.randn(*lead, num_samples, num_factors, **options),
            diag_noise=torch.randn(*lead, num_samples, num_classes, **options),
        )

    @classmethod
    def fixed(
        cls,
        num_samples: int,
        num_factors: int,
        num_classes: int,
        *,
        seed: int,
        design: str = "normal",
    ) -> NoiseBank:
        """A reproducible shared bank (CPU float32) of the given ``design`` (module doc) from
        ``seed``: the one baked into exports.

        The same seed and design give the same bank on every machine: "normal" comes from
        PyTorch's CPU generator (factor noise first, then diagonal noise), the Sobol designs
        from ``torch.quasirandom.SobolEngine`` scrambled with ``seed``.
        """
        if num_samples < 1:
            raise ValueError(f"num_samples must be >= 1, got {num_samples}")
        design = resolve_design(design, num_samples, num_factors, num_classes)
        if design == FITTED_DESIGN:
            raise ValueError(f"the {FITTED_DESIGN!r} bank is fitted to a model's latents "
                             "(hetexport.exact.bank_fit.fit_bank; an export fits it on its "
                             "held-out error images), not drawn from a seed")
        try:
            make = BANK_DESIGNS[design]
        except KeyError:
            raise ValueError(f"unknown bank design {design!r}; known: {sorted(BANK_DESIGNS)}") \
                from None
        points = make(num_samples, num_factors, num_classes, seed).float()
        return cls(points[:, :num_factors].contiguous(), points[:, num_factors:].contiguous())

    def to(
        self, device: torch.device | str | None = None, dtype: torch.dtype | None = None
    ) -> NoiseBank:
        return NoiseBank(self.factor_noise.to(device, dtype), self.diag_noise.to(device, dtype))


def normal_design(samples: int, factors: int, width: int, seed: int) -> Tensor:
    """Pseudo-random N(0, I) [S, R + N] from PyTorch's CPU generator: the factor block drawn
    first, then the diagonal block (the bank every export used before designs existed, bit
    for bit)."""
    generator = torch.Generator().manual_seed(seed)
    return torch.cat([torch.randn(samples, factors, generator=generator),
                      torch.randn(samples, width, generator=generator)], 1)


def resolve_design(design: str, samples: int, factors: int, width: int) -> str:
    """The design ``"auto"`` means for S samples of R + N dimensions (module doc); any other
    name as it is."""
    if design != AUTO_DESIGN:
        return design
    if samples % 2 == 0 and samples // 2 > factors:
        return "moment_matched_sobol"
    if factors + width <= SOBOL_MAX_DIMENSION:
        return "sobol"
    return "normal"


def sobol_design(samples: int, factors: int, width: int, seed: int) -> Tensor:
    """Owen-scrambled Sobol points through ``Phi^{-1}`` [S, d] (float64); d <= 21201."""
    if factors + width > SOBOL_MAX_DIMENSION:
        raise ValueError(f"Sobol points go up to {SOBOL_MAX_DIMENSION} dimensions, "
                         f"R + N is {factors + width}")
    engine = torch.quasirandom.SobolEngine(factors + width, scramble=True, seed=seed)
    uniform = engine.draw(samples, dtype=torch.float64).clamp(_OPEN_UNIT, 1 - _OPEN_UNIT)
    return torch.special.ndtri(uniform)


def antithetic_sobol_design(samples: int, factors: int, width: int, seed: int) -> Tensor:
    """S/2 scrambled Sobol normals and their negations [S, d]; S must be even."""
    if samples % 2:
        raise ValueError(f"an antithetic bank needs an even sample count, got {samples}")
    half = sobol_design(samples // 2, factors, width, seed)
    return torch.cat([half, -half])


def moment_matched_sobol_design(samples: int, factors: int, width: int, seed: int) -> Tensor:
    """``antithetic_sobol`` whitened: ``z (Z^T Z / S)^{-1/2}``, so that the bank's mean is 0
    and its second moment ``Z^T Z / S`` is exactly I (antithetic pairs keep the mean 0), where
    S/2 > d = R + N; else whitened block by block (``whiten_blocks``, module doc), which needs
    S/2 > R. Beyond Sobol's dimensions the half points are pseudo-random."""
    if samples % 2 or samples // 2 <= factors:
        raise ValueError(f"a moment-matched bank needs an even S with S/2 > R = {factors}, "
                         f"got S = {samples}")
    if samples // 2 <= factors + width:
        half = _half_points(samples // 2, factors, width, seed)
        white = whiten_blocks(half, factors)
        return torch.cat([white, -white])
    z = antithetic_sobol_design(samples, factors, width, seed)
    second = z.T @ z / samples
    values, vectors = torch.linalg.eigh(second)
    return z @ (vectors * values.rsqrt()) @ vectors.T


def whiten_blocks(half: Tensor, factors: int) -> Tensor:
    """Points Y [h, R + N] with h <= R + N, whitened block by block: the factor block F to
    second moment exactly I (``F L^{-T}``, ``L L^T = F^T F / h``), each diagonal column made
    orthogonal to F and scaled to second moment exactly 1. With Y's negations appended, the
    bank's mean is 0, its factor block's second moment I, the factor-diagonal products 0 and
    each diagonal coordinate's square 1 (module doc). Differentiable in Y."""
    count = half.shape[0]
    block, diag = half[:, :factors], half[:, factors:]
    if factors:
        lower = torch.linalg.cholesky(block.T @ block / count)
        block = torch.linalg.solve_triangular(lower, block.T, upper=False).T
        diag = diag - block @ (block.T @ diag) / count
    diag = diag * torch.rsqrt(diag.square().mean(0, keepdim=True))
    return torch.cat([block, diag], 1)


def _half_points(count: int, factors: int, width: int, seed: int) -> Tensor:
    """``count`` scrambled Sobol normals [count, R + N], pseudo-random beyond Sobol's
    dimensions (float64)."""
    if factors + width <= SOBOL_MAX_DIMENSION:
        return sobol_design(count, factors, width, seed)
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(count, factors + width, generator=generator, dtype=torch.float64)


BANK_DESIGNS: dict[str, Callable[[int, int, int, int], Tensor]] = {
    "normal": normal_design,
    "sobol": sobol_design,
    "antithetic_sobol": antithetic_sobol_design,
    "moment_matched_sobol": moment_matched_sobol_design,
}
"""Bank designs by name: ``(S, R, N, seed) -> [S, R + N]`` standard normals (module doc)."""
