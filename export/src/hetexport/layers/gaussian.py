"""The latent logit distribution of a HET head: ``u ~ N(mu(x), V(x) V(x)^T + diag(d(x)^2))``.

Collier, Mustafa, Kokiopoulou, Jenatton, Berent, "Correlated Input-Dependent Label Noise in
Large-Scale Image Classification", CVPR 2021 (arXiv 2105.10305); the pre-logit (HET-XL) form
follows Collier et al., "Massively Scaling Heteroscedastic Classifiers", ICLR 2023.

Typical usage::

    latent = head.latent(phi)                      # LatentGaussian, B examples, K classes
    rows = latent.correlation_rows(top_ids, centered=True)  # [B, k, K], never [B, K, K]
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import torch
from torch import Tensor

from hetexport.layers import batch_invariant
from hetexport.layers.numerics import VARIANCE_FLOOR


@dataclass(frozen=True)
class LatentGaussian:
    """Per-example Gaussian over the K latent logits, with low-rank plus diagonal covariance.

    ``Sigma = V V^T + diag(d^2)``, written with the factors in one of two forms:

    * dense factors ``factors`` V [B, K, R] (or ``None`` for R = 0, diagonal only);
    * parameter-efficient factors ``V = diag(v) J``: ``factor_scale`` v [B, K] and
      ``shared_factors`` J [K, R] (one J for every input), which never materialise [B, K, R].

    The diagonal noise term comes in one of two forms:

    * class space (HET): ``diag(d^2)`` from ``scale`` d [B, K], sampled as ``d * z_K``;
    * pre-logit space (HET-XL): ``W diag(d'^2) W^T`` from ``prelogit_scale`` d' [B, D] and the
      classifier ``prelogit_weight`` W [K, D], sampled as ``(d' * z_D) W^T``. Build it with
      ``LatentGaussian.with_prelogit_diagonal``.

    Why the pre-logit diagonal is a term of this class and not a second distribution type:
    HET-XL samples ``phi_s = phi + V'(x) z_R + d'(x) * z_D`` and ``u_s = W phi_s + b``, so
    ``u ~ N(W phi + b, (W V')(W V')^T + W diag(d'^2) W^T)``. Its low-rank part is an ordinary
    dense factor matrix ``V = W V'`` [B, K, R] (as cheap to hold as a HET head's V), and only
    the diagonal part differs: ``W diag(d'^2) W^T`` is not diagonal, and writing it as K x D
    extra factors would hold [B, K, D] per batch (more than K x K when D > K). Keeping it as
    (d', W) lets every consumer stay as it is: the MC average (``project_diag_noise``), the
    rows of Sigma and of the correlation for chosen classes in O(B k K (R + D)) without any
    [B, K, K], and one ``HeadOutput.latent`` type for every head. Its noise bank holds
    z_D [S, D] where a class-space head's holds z_K [S, K] (``diag_noise_dim``).

    In the pre-logit form there is no class-space diagonal: ``scale`` is zeros and no formula
    of that form reads it (so ``Sigma = V V^T + W diag(d'^2) W^T`` exactly).

    Attributes:
        mean: mu [B, K].
        scale: d [B, K], >= 0 (> 0 for a HET head; 0 for a deterministic or HET-XL head).
        factors: V [B, K, R] or None.
        factor_scale: v [B, K] or None (parameter-efficient form).
        shared_factors: J [K, R] or None (parameter-efficient form).
        prelogit_scale: d' [B, D] or None (pre-logit diagonal form).
        prelogit_weight: the classifier W [K, D] or None (pre-logit diagonal form).
    """

    mean: Tensor
    scale: Tensor
    factors: Tensor | None = None
    factor_scale: Tensor | None = None
    shared_factors: Tensor | None = None
    prelogit_scale: Tensor | None = None
    prelogit_weight: Tensor | None = None

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
        self._check_prelogit_diagonal()

    def _check_prelogit_diagonal(self) -> None:
        given = (self.prelogit_scale is not None, self.prelogit_weight is not None)
        if given[0] != given[1]:
            raise ValueError("prelogit_scale and prelogit_weight go together")
        if not given[0]:
            return
        if self.parameter_efficient:
            raise ValueError("the pre-logit diagonal goes with dense factors (V = W V'), not J")
        batch, classes = self.mean.shape
        if (
            self.prelogit_scale.dim() != 2
            or self.prelogit_scale.shape[0] != batch
            or self.prelogit_weight.shape != (classes, self.prelogit_scale.shape[1])
        ):
            raise ValueError(
                f"prelogit_scale must be [B, D] and prelogit_weight [K, D], got "
                f"{tuple(self.prelogit_scale.shape)} and {tuple(self.prelogit_weight.shape)}"
            )

    def detached_float64(self) -> LatentGaussian:
        """The same Gaussian in float64, detached from any graph (the exact references
        integrate in double precision)."""
        return LatentGaussian(**{
            field.name: None if (t := getattr(self, field.name)) is None else t.detach().double()
            for field in fields(self)
        })

    @classmethod
    def with_prelogit_diagonal(
        cls,
        mean: Tensor,
        *,
        prelogit_scale: Tensor,
        prelogit_weight: Tensor,
        prelogit_factors: Tensor | None = None,
    ) -> LatentGaussian:
        """The HET-XL latent: ``N(mu, (W V')(W V')^T + W diag(d'^2) W^T)``.

        mean mu [B, K], prelogit_scale d' [B, D], prelogit_weight W [K, D], prelogit_factors
        V' [B, D, R] or None (R = 0). Stores ``V = W V'`` [B, K, R] as dense factors and a zero
        class-space scale.
        """
        factors = None
        if prelogit_factors is not None:
            factors = torch.matmul(prelogit_weight, prelogit_factors)  # [B, K, R]
        return cls(
            mean,
            torch.zeros_like(mean),
            factors,
            prelogit_scale=prelogit_scale,
            prelogit_weight=prelogit_weight,
        )

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

    @property
    def diag_noise_dim(self) -> int:
        """Width of the diagonal noise z a sample needs: K (class space) or D (pre-logit)."""
        if self.prelogit_scale is not None:
            return int(self.prelogit_scale.shape[1])
        return self.num_classes

    def scaled(self, factor: Tensor) -> LatentGaussian:
        """The latent of ``c u`` for a scalar c: ``N(c mu, c^2 Sigma)`` (mu, d, V or v, d'
        times c; J and W unchanged). ``u_s / tau`` is then sampled directly from
        ``scaled(1 / tau)`` on [B, K, R]-sized tensors instead of dividing [B, S, K]."""
        def times(value: Tensor | None) -> Tensor | None:
            return None if value is None else value * factor

        return LatentGaussian(
            self.mean * factor,
            self.scale * factor,
            times(self.factors),
            times(self.factor_scale),
            self.shared_factors,
            times(self.prelogit_scale),
            self.prelogit_weight,
        )

    # ---- the low-rank part, in either form -------------------------------------------------

    def project_factor_noise(self, factor_noise: Tensor) -> Tensor:
        """``V z_R`` for every sample: factor noise [S, R] or [B, S, R] -> [B, S, K].

        Dense: ``einsum('bkr,(b)sr->bsk')``; parameter-efficient: ``v * (z_R J^T)``.
        Returns zeros [B, S, K] when R = 0.
        """
        samples = factor_noise.shape[-2]
        if self.num_factors == 0:
            return self.mean.new_zeros(self.mean.shape[0], samples, self.num_classes)
        if self.factors is not None:
            return torch.matmul(factor_noise, self.factors.transpose(1, 2))
        projected = torch.matmul(factor_noise, self.shared_factors.t())  # [S, K] or [B, S, K]
        return self.factor_scale.unsqueeze(1) * projected

    def project_diag_noise(self, diag_noise: Tensor) -> Tensor:
        """The diagonal term of every sample: diag noise [S, N] or [B, S, N] -> [B, S, K].

        Class space (N = K): ``d * z_K``; pre-logit space (N = D): ``(d' * z_D) W^T``.
        """
        if self.prelogit_scale is not None:
            scaled = self.prelogit_scale.unsqueeze(1) * diag_noise  # [B, S, D]
            return torch.matmul(scaled, self.prelogit_weight.t())
        samples = diag_noise.shape[-2]
        return batch_invariant.per_sample(self.scale, samples) * diag_noise

    def factor_rows(self, idx: Tensor) -> Tensor:
        """Rows ``V[idx]`` [B, k, R] of the factor matrix for class ids idx [B, k]."""
        if self.factors is not None:  # picked by a product with the one-hot rows (exact)
            return torch.matmul(_one_hot(idx, self.num_classes, dtype=self.factors.dtype),
                                self.factors)
        if self.shared_factors is not None:
            rows = self.shared_factors[idx]  # [B, k, R]
            return torch.gather(self.factor_scale, 1, idx).unsqueeze(-1) * rows
        return self.mean.new_zeros(idx.shape[0], idx.shape[1], 0)

    # ---- second moments --------------------------------------------------------------------

    def variance(self) -> Tensor:
        """Diagonal of Sigma: ``Sigma_kk = sum_r V_kr^2 + d_k^2`` [B, K].

        Pre-logit form: ``d_k^2`` becomes ``sum_j W_kj^2 d'_j^2``.
        """
        diag = self._diagonal_term_variance()
        if self.factors is not None:
            return diag + batch_invariant.sum(self.factors.square(), -1)
        if self.shared_factors is not None:
            return diag + self.factor_scale.square() * batch_invariant.sum(
                self.shared_factors.square(), -1)
        return diag

    def covariance_rows(self, idx: Tensor) -> Tensor:
        """Rows of Sigma for class ids idx [B, k] -> [B, k, K], O(B k K R), no [B, K, K].

        ``Sigma[i, :] = V[i] V^T + d_i^2 e_i``; pre-logit form (O(B k K (R + D))):
        ``Sigma[i, :] = V[i] V^T + (W[i] * d'^2) W^T``.
        """
        rows = self._low_rank_rows(idx)
        if self.prelogit_scale is not None:
            weighted = self.prelogit_weight[idx] * self.prelogit_scale.square().unsqueeze(1)
            return rows + torch.matmul(weighted, self.prelogit_weight.t())  # [B, k, K]
        own_variance = torch.gather(self.scale.square(), 1, idx)  # [B, k]
        is_self = _one_hot(idx, self.num_classes, dtype=self.mean.dtype)  # [B, k, K]
        return rows + own_variance.unsqueeze(-1) * is_self

    # ---- the identifiable (centred) second moments ------------------------------------------

    def row_means(self) -> Tensor:
        """``r = Sigma 1 / K`` [B, K], the mean of each row of Sigma, without any [B, K, K].

        ``Sigma 1 = V (V^T 1) + d^2``; parameter-efficient (V = diag(v) J):
        ``v * (J (J^T v)) + d^2``; pre-logit diagonal (HET-XL): ``V (V^T 1) + W (d'^2 * (W^T 1))``.
        O(B K R) (+ O(B K D) for HET-XL).
        """
        classes = self.num_classes
        if self.prelogit_scale is not None:
            column_sums = self.prelogit_weight.sum(0)  # W^T 1 [D]
            summed = torch.matmul(self.prelogit_scale.square() * column_sums,
                                  self.prelogit_weight.t())  # [B, K]
        else:
            summed = self.scale.square()
        if self.factors is not None:
            factor_sums = batch_invariant.sum(self.factors, 1).unsqueeze(1)  # (V^T 1)^T [B, 1, R]
            summed = summed + batch_invariant.sum(self.factors * factor_sums, -1)
        elif self.shared_factors is not None:
            weighted = torch.matmul(self.factor_scale, self.shared_factors)  # J^T v [B, R]
            summed = summed + self.factor_scale * torch.matmul(weighted, self.shared_factors.t())
        return summed / classes

    def centered_covariance_rows(self, idx: Tensor) -> Tensor:
        """Rows of ``Sigma_c = C Sigma C``, ``C = I - 1 1^T / K``, for class ids idx [B, k].

        Softmax is invariant to a common shift of all logits (``softmax(u + c 1) = softmax(u)``),
        so the likelihood never sees the all-ones direction of u: ``V`` and ``V + 1 a^T`` give
        the same predictions, and Sigma's component along 1 is whatever training left there.
        ``C`` removes it; ``Sigma_c`` is the covariance of the centred logits ``u - mean_k u_k``,
        the part of Sigma the data determines. With ``r = Sigma 1 / K`` (``row_means``) and
        ``t = mean_k r_k``: ``Sigma_c[i, j] = Sigma_ij - r_i - r_j + t``. Every row sums to 0.
        Returns [B, k, K] in O(B k K R), never [B, K, K].
        """
        return self._centered_covariance_rows(idx, *self._row_mean_stats())

    def centered_variance(self) -> Tensor:
        """Diagonal of ``Sigma_c``: ``Sigma_ii - 2 r_i + t`` [B, K] (see
        ``centered_covariance_rows``), floored at 0 against rounding."""
        return self._centered_variance(*self._row_mean_stats())

    def correlation_rows(self, idx: Tensor, *, centered: bool) -> Tensor:
        """Rows of a correlation matrix ``S_ij / sqrt(S_ii S_jj)`` for class ids idx [B, k]
        -> [B, k, K], never the full [B, K, K].

        ``centered=True``: S = ``Sigma_c = C Sigma C`` (``centered_covariance_rows``), the
        identifiable part for a softmax link: unchanged by ``V -> V + 1 a^T``. Its rows sum to
        0, so the centred correlations of a class with the others are negative on average;
        a strongly negative ``corr_ij`` means the noise moves probability mass between i and j.
        ``centered=False``: S = Sigma, the raw latent covariance (the sigmoid link sees every
        logit on its own, so nothing is unidentified there).

        The self-correlation is exactly 1, also where the variance is 0 (deterministic head),
        so a head without noise has the identity correlation (both forms).
        """
        if centered:
            means, total = self._row_mean_stats()
            variance = self._centered_variance(means, total)
            rows = self._centered_covariance_rows(idx, means, total)
        else:
            variance = self.variance()
            rows = self.covariance_rows(idx)
        own = torch.gather(variance, 1, idx)  # [B, k]
        product = own.unsqueeze(-1) * variance.unsqueeze(1)
        denom = torch.sqrt(torch.clamp(product, min=VARIANCE_FLOOR))
        corr = rows / denom
        is_self = _one_hot(idx, self.num_classes, dtype=torch.bool)
        return torch.where(is_self, torch.ones_like(corr), corr)

    def covariance(self) -> Tensor:
        """The full Sigma [B, K, K]; for small K and tests only (O(B K^2) memory)."""
        idx = torch.arange(self.num_classes, device=self.mean.device)
        return self.covariance_rows(idx.expand(self.batch_size, -1))

    def centered_covariance(self) -> Tensor:
        """The full ``Sigma_c = C Sigma C`` [B, K, K]; for small K and tests only."""
        idx = torch.arange(self.num_classes, device=self.mean.device)
        return self.centered_covariance_rows(idx.expand(self.batch_size, -1))

    def _row_mean_stats(self) -> tuple[Tensor, Tensor]:
        """``(r, t)``: the row means ``r = Sigma 1 / K`` [B, K] and their mean t [B, 1]."""
        means = self.row_means()  # [B, K]
        return means, batch_invariant.mean(means, -1).unsqueeze(-1)

    def _centered_covariance_rows(self, idx: Tensor, means: Tensor, total: Tensor) -> Tensor:
        """``Sigma_c[i, :] = Sigma[i, :] - r_i - r + t`` for class ids idx [B, k] -> [B, k, K]."""
        own = torch.gather(means, 1, idx)  # r_i [B, k]
        shift = own.unsqueeze(-1) + means.unsqueeze(1) - total.unsqueeze(-1)  # [B, k, K]
        return self.covariance_rows(idx) - shift

    def _centered_variance(self, means: Tensor, total: Tensor) -> Tensor:
        """``max(Sigma_ii - 2 r_i + t, 0)`` [B, K]."""
        return torch.clamp(self.variance() - 2.0 * means + total, min=0.0)

    def _diagonal_term_variance(self) -> Tensor:
        """Diagonal of the noise's diagonal term: ``d^2`` or ``(W * W) d'^2`` [B, K]."""
        if self.prelogit_scale is not None:
            return torch.matmul(self.prelogit_scale.square(), self.prelogit_weight.square().t())
        return self.scale.square()

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
