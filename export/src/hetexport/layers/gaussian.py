"""The latent logit distribution of a HET head: ``u ~ N(mu(x), V(x) V(x)^T + diag(d(x)^2))``.

Collier, Mustafa, Kokiopoulou, Jenatton, Berent, "Correlated Input-Dependent Label Noise in
Large-Scale Image Classification", CVPR 2021 (arXiv 2105.10305).

Typical usage::

    latent = head.latent(phi)                      # LatentGaussian, B examples, K classes
    rows = latent.correlation_rows(top_ids)        # [B, k, K], never the full [B, K, K]
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from hetexport.layers.numerics import VARIANCE_FLOOR


@dataclass(frozen=True)
class LatentGaussian:
    """Per-example Gaussian over the K latent logits, with low-rank plus diagonal covariance.

    ``Sigma = V V^T + diag(d^2)``, written with the factors in one of two forms:

    * dense factors ``factors`` V [B, K, R] (or ``None`` for R = 0, diagonal only);
    * parameter-efficient factors ``V = diag(v) J``: ``factor_scale`` v [B, K] and
      ``shared_factors`` J [K, R] (one J for every input), which never materialise [B, K, R].

    Attributes:
        mean: mu [B, K].
        scale: d [B, K], >= 0 (> 0 for a HET head; 0 for a deterministic head).
        factors: V [B, K, R] or None.
        factor_scale: v [B, K] or None (parameter-efficient form).
        shared_factors: J [K, R] or None (parameter-efficient form).
    """

    mean: Tensor
    scale: Tensor
    factors: Tensor | None = None
    factor_scale: Tensor | None = None
    shared_factors: Tensor | None = None

    def __post_init__(self) -> None:
        if self.mean.dim() != 2 or self.scale.shape != self.mean.shape:
            raise ValueError(
                f"mean and scale must both be [B, K], got {tuple(self.mean.shape)} "
                f"and {tuple(self.scale.shape)}"
            )
        efficient = (self.factor_scale is not None, self.shared_factors is not None)
        if efficient[0] != efficient[1]:
            raise ValueError("factor_scale and shared_factors go together")
        if efficient[0] and self.factors is not None:
            raise ValueError("give either dense factors or (factor_scale, shared_factors)")
        batch, classes = self.mean.shape
        if self.factors is not None and self.factors.shape[:2] != (batch, classes):
            raise ValueError(f"factors must be [B, K, R], got {tuple(self.factors.shape)}")
        if efficient[0] and (
            self.factor_scale.shape != self.mean.shape
            or self.shared_factors.dim() != 2
            or self.shared_factors.shape[0] != classes
        ):
            raise ValueError("factor_scale must be [B, K] and shared_factors [K, R]")

    # ---- sizes ----------------------------------------------------------------------------

    @property
    def batch_size(self) -> int:
        return int(self.mean.shape[0])

    @property
    def num_classes(self) -> int:
        return int(self.mean.shape[1])

    @property
    def num_factors(self) -> int:
        """R, the rank of the low-rank part (0 for diagonal-only or deterministic)."""
        if self.factors is not None:
            return int(self.factors.shape[-1])
        if self.shared_factors is not None:
            return int(self.shared_factors.shape[-1])
        return 0

    @property
    def parameter_efficient(self) -> bool:
        return self.shared_factors is not None

    # ---- the low-rank part, in either form -------------------------------------------------

    def project_factor_noise(self, factor_noise: Tensor) -> Tensor:
        """``V z_R`` for every sample: factor noise [S, R] or [B, S, R] -> [B, S, K].

        Dense: ``einsum('bkr,(b)sr->bsk')``; parameter-efficient: ``v * (z_R J^T)``.
        Returns zeros [B, S, K] when R = 0.
        """
        samples = factor_noise.shape[-2]
        if self.num_factors == 0:
            return self.mean.new_zeros(self.batch_size, samples, self.num_classes)
        if self.factors is not None:
            return torch.matmul(factor_noise, self.factors.transpose(1, 2))
        projected = torch.matmul(factor_noise, self.shared_factors.t())  # [S, K] or [B, S, K]
        return self.factor_scale.unsqueeze(1) * projected

    def factor_rows(self, idx: Tensor) -> Tensor:
        """Rows ``V[idx]`` [B, k, R] of the factor matrix for class ids idx [B, k]."""
        if self.factors is not None:
            gather_idx = idx.unsqueeze(-1).expand(-1, -1, self.num_factors)
            return torch.gather(self.factors, 1, gather_idx)
        if self.shared_factors is not None:
            rows = self.shared_factors[idx]  # [B, k, R]
            return torch.gather(self.factor_scale, 1, idx).unsqueeze(-1) * rows
        return self.mean.new_zeros(idx.shape[0], idx.shape[1], 0)

    # ---- second moments --------------------------------------------------------------------

    def variance(self) -> Tensor:
        """Diagonal of Sigma: ``Sigma_kk = sum_r V_kr^2 + d_k^2`` [B, K]."""
        diag = self.scale.square()
        if self.factors is not None:
            return diag + self.factors.square().sum(-1)
        if self.shared_factors is not None:
            return diag + self.factor_scale.square() * self.shared_factors.square().sum(-1)
        return diag

    def covariance_rows(self, idx: Tensor) -> Tensor:
        """Rows of Sigma for class ids idx [B, k] -> [B, k, K], O(B k K R), no [B, K, K].

        ``Sigma[i, :] = V[i] V^T + d_i^2 e_i``.
        """
        rows = self._low_rank_rows(idx)
        own_variance = torch.gather(self.scale.square(), 1, idx)  # [B, k]
        is_self = _one_hot(idx, self.num_classes, dtype=self.mean.dtype)  # [B, k, K]
        return rows + own_variance.unsqueeze(-1) * is_self

    def correlation_rows(self, idx: Tensor) -> Tensor:
        """Rows of the correlation matrix ``Sigma_ij / sqrt(Sigma_ii Sigma_jj)`` [B, k, K].

        The self-correlation is exactly 1, also where the variance is 0 (deterministic head),
        so a head without noise has the identity correlation.
        """
        variance = self.variance()
        own = torch.gather(variance, 1, idx)  # [B, k]
        product = own.unsqueeze(-1) * variance.unsqueeze(1)
        denom = torch.sqrt(torch.clamp(product, min=VARIANCE_FLOOR))
        corr = self.covariance_rows(idx) / denom
        is_self = _one_hot(idx, self.num_classes, dtype=torch.bool)
        return torch.where(is_self, torch.ones_like(corr), corr)

    def covariance(self) -> Tensor:
        """The full Sigma [B, K, K]; for small K and tests only (O(B K^2) memory)."""
        idx = torch.arange(self.num_classes, device=self.mean.device)
        return self.covariance_rows(idx.expand(self.batch_size, -1))

    def _low_rank_rows(self, idx: Tensor) -> Tensor:
        if self.factors is not None:
            return torch.matmul(self.factor_rows(idx), self.factors.transpose(1, 2))
        if self.shared_factors is not None:
            # (v_i J_i) (diag(v) J)^T = ((v_i J_i) J^T) * v
            return torch.matmul(self.factor_rows(idx), self.shared_factors.t()) * (
                self.factor_scale.unsqueeze(1)
            )
        return self.mean.new_zeros(idx.shape[0], idx.shape[1], self.num_classes)


def _one_hot(idx: Tensor, num_classes: int, *, dtype: torch.dtype) -> Tensor:
    """[B, k] ids -> [B, k, K] indicator, written as a comparison so it exports to ONNX."""
    classes = torch.arange(num_classes, device=idx.device)
    return (idx.unsqueeze(-1) == classes).to(dtype)
