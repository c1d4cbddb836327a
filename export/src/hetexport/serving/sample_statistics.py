"""One pass over the baked bank's samples: p_bar, both entropies and where the top classes'
probability moves, from a single softmax of the samples.

For B examples, S samples and K classes, with ``x_s = u_s / tau`` [B, S, K] (``tempered_samples``)
and ``p_s = softmax(x_s)``:

* ``p_bar = (1/S) sum_s p_s``: the mean of the two halves' means ``[2, S] @ [B, S, K]`` (one
  product; the halves serve the shares' error below);
* one ``LogSoftmax`` of the samples gives ``log p_s`` (its row-wise kernel rounds every row
  alike), an element-wise ``Exp`` gives ``p_s`` (ONNX Runtime's MLAS kernel computes the tail
  of a buffer with the same masked vector code as its body, so an element's bits do not depend
  on its place: ``batch_invariant``), and ``H_s = -sum_k p_sk log p_sk`` is one row product.
  This is cheaper than a ``Softmax`` with ``H_s = LSE_s - sum_k p_sk x_sk``, which needs two
  more row maxima and a logarithm per sample (measured: the log-softmax kernel stores no
  exponentials and costs less than the softmax's), and needs no second softmax or
  log-softmax pass and no transposed copy of the samples;
* ``H[p_bar] = -sum_k p_bar_k log p_bar_k``: the logarithm of K numbers per example,
  ``batch_invariant.log_unit`` (exactly rounded operations only);
* ``Cov_s(p_i, p_j)`` for the k top classes i only: ``(1/S) sum_s (p_si - p_bar_i) p_sj`` (one
  factor centred is enough: ``sum_s (p_si - p_bar_i) = 0``), one product of the centred top
  columns ``[B, k, S]`` with the samples ``[B, S, K]``; the top columns are picked from the
  samples exactly either way (``top_columns``): by a product with their one-hot indicator
  for K <= ``PICK_BY_PRODUCT_MAX_WIDTH``, by a gather for wider K. Only k rows are ever
  formed.

The same product also gives the rows over each half of the bank (``Movement``): two
estimates from disjoint halves (each a balanced design: antithetic pairs stay together), whose
difference is the served shares' own standard error, and the relative standard error of each
top class's ``Var_s(p_i)``, ``sqrt(S sum_s d^4 / (sum_s d^2)^2 - 1) / sqrt(S)`` with
``d = p_si - p_bar_i``: how many samples carry the class's movement. The shares and the rule
that withholds the unreliable ones are ``hetexport.class_correlation``.

The logits are shifted by each example's largest mean logit first (a softmax ignores a common
shift; nothing then grows with the logits' scale in float32).

Typical usage::

    scaled = tempered_samples(latent, bank, tau)                     # [B, S, K]
    stats = softmax_statistics(scaled, top_k=5, halves=bank_halves(bank))
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor

from hetexport.layers import LatentGaussian, NoiseBank, batch_invariant

PICK_BY_PRODUCT_MAX_WIDTH = 16
"""Up to this many classes ``top_columns`` picks by a product with the one-hot indicator
[B, K, k], wider by a gather over [B, S, k]. Measured in ONNX Runtime, one thread, k = 5 of
S = 128 samples at batch 32: K = 10 product 33 us, gather 57 us; K = 32 70 vs 58 us; at K =
1000 and S = 512, batch 1: product 171 us, gather 16 us (the product is S K k operations, the
gather S k copies)."""


class Movement(NamedTuple):
    """Where the top classes' probability moves, from the samples.

    Attributes:
        rows: ``Cov_s(p_i, p_j)`` over all samples, for the top classes i [B, k, K].
        half_rows: the same over each half of the bank [B, 2, k, K].
        variance_error: relative standard error of ``Var_s(p_i)`` [B, k] (module doc); 0
            where the class does not move.
    """

    rows: Tensor
    half_rows: Tensor
    variance_error: Tensor


class SampleStatistics(NamedTuple):
    """What the served head takes from the samples (module doc)."""

    probs: Tensor
    expected_entropy: Tensor
    predictive_entropy: Tensor
    topk_ids: Tensor
    topk_probs: Tensor
    movement: Movement


def tempered_samples(latent: LatentGaussian, noise: NoiseBank, temperature: Tensor) -> Tensor:
    """``x_s = (mu + V z_R[s] + d * z_K[s]) / tau - max_k mu_k / tau`` [B, S, K].

    The bank is divided by tau once (constants of the graph). Dense factors fold the mean into
    the factor product, ``[z_R, 1] @ [V, mu]^T``, and for K <= ``EXPAND_MAX_WIDTH`` the diagonal
    term too, ``[z_R, 1, z_K] @ [V, mu, diag(d)]^T``: one MatMul forms every sample (a
    broadcast over a short class axis costs more than the product's extra K columns). The
    parameter-efficient and HET-XL forms go through ``LatentGaussian.project_*``.
    """
    inverse = torch.reciprocal(torch.as_tensor(temperature, dtype=latent.mean.dtype))
    mean = latent.mean - latent.mean.amax(-1, keepdim=True)
    z_r = noise.factor_noise * inverse
    z_k = noise.diag_noise * inverse
    if latent.shared_factors is None and latent.prelogit_scale is None:
        points = [z_r, torch.ones(noise.num_samples, 1, dtype=z_r.dtype) * inverse]
        columns = [mean.unsqueeze(-1)]
        if latent.factors is not None:
            columns.insert(0, latent.factors)
        if latent.num_classes <= batch_invariant.EXPAND_MAX_WIDTH:
            eye = torch.eye(latent.num_classes, dtype=mean.dtype)
            points.append(z_k)
            columns.append(latent.scale.unsqueeze(-1) * eye)
            return torch.matmul(torch.cat(points, 1), torch.cat(columns, -1).transpose(1, 2))
        low = torch.matmul(torch.cat(points, 1), torch.cat(columns, -1).transpose(1, 2))
        return low + latent.scale.unsqueeze(1) * z_k
    shifted = LatentGaussian(mean, latent.scale, latent.factors, latent.factor_scale,
                             latent.shared_factors, latent.prelogit_scale, latent.prelogit_weight)
    diag = shifted.project_diag_noise(z_k)
    return (shifted.project_factor_noise(z_r) + diag
            + batch_invariant.per_sample(mean * inverse, diag.shape[1]))


def bank_halves(noise: NoiseBank) -> Tensor:
    """Weights [2, S] of the bank's two halves (1 / (S/2) on a half's samples, 0 elsewhere).

    An antithetic bank (rows s and s + S/2 negations of each other: the antithetic, moment-
    matched and fitted designs) keeps its pairs together: a half is the first and the third
    quarter; any other bank splits into its first and second half (a Sobol sequence's halves
    are each a balanced net)."""
    samples = noise.num_samples
    if samples < 2:
        raise ValueError("a bank needs at least 2 samples to be split in halves")
    points = torch.cat([noise.factor_noise, noise.diag_noise], -1)
    order = torch.arange(samples)
    antithetic = samples % 4 == 0 and torch.equal(points[: samples // 2], -points[samples // 2:])
    first = (order % (samples // 2) < samples // 4) if antithetic else order < samples // 2
    weights = torch.stack([first, ~first]).to(points.dtype)
    return weights / weights.sum(-1, keepdim=True)


def softmax_statistics(scaled: Tensor, *, top_k: int, halves: Tensor) -> SampleStatistics:
    """p_bar, the entropies and the top classes' ``Movement`` from samples ``x_s`` [B, S, K]
    (module doc); ``halves`` [2, S] from ``bank_halves``."""
    log_probs_s = torch.log_softmax(scaled, -1)
    probs_s = torch.exp(log_probs_s)  # ONNX Runtime's Exp rounds every element alike (MLAS)
    half_means = torch.matmul(halves.to(probs_s.dtype), probs_s)  # [B, 2, K]
    probs = (half_means[:, 0] + half_means[:, 1]) * 0.5
    expected = -batch_invariant.mean(batch_invariant.sum(probs_s * log_probs_s, -1), -1)
    predictive = -batch_invariant.sum(probs * batch_invariant.log_unit(probs), -1)
    topk_probs, topk_ids = torch.topk(probs, top_k, dim=-1)
    move = movement(probs_s, half_means, topk_ids, topk_probs, halves)
    return SampleStatistics(probs, expected, predictive, topk_ids, topk_probs, move)


def sampled_statistics(probs_s: Tensor, probs: Tensor, expected: Tensor, predictive: Tensor,
                       *, top_k: int, halves: Tensor) -> SampleStatistics:
    """``SampleStatistics`` of samples averaged elsewhere (the sigmoid head's
    ``hetexport.layers.mc_sigmoid``): its sampled probabilities [B, S, K] and averages."""
    topk_probs, topk_ids = torch.topk(probs, top_k, dim=-1)
    half_means = torch.matmul(halves.to(probs_s.dtype), probs_s)
    move = movement(probs_s, half_means, topk_ids, topk_probs, halves)
    return SampleStatistics(probs, expected, predictive, topk_ids, topk_probs, move)


def deterministic_statistics(logits: Tensor, *, top_k: int) -> SampleStatistics:
    """A plain softmax ``p = softmax(logits)`` [B, K] as one noise-free sample: its entropy is
    both entropies, nothing moves (``Movement`` of zeros)."""
    probs = torch.softmax(logits, -1)
    entropy = -batch_invariant.sum(probs * batch_invariant.log_unit(probs), -1)
    topk_probs, topk_ids = torch.topk(probs, top_k, dim=-1)
    rows = torch.zeros_like(topk_probs).unsqueeze(-1) * probs.unsqueeze(1)  # [B, k, K] of 0
    still = Movement(rows, torch.stack([rows, rows], 1), torch.zeros_like(topk_probs))
    return SampleStatistics(probs, entropy, entropy, topk_ids, topk_probs, still)


def movement(probs_s: Tensor, half_means: Tensor, topk_ids: Tensor, topk_probs: Tensor,
             halves: Tensor) -> Movement:
    """The top classes' ``Movement`` from sampled probabilities P [B, S, K] and the halves'
    means ``w_h^T P`` [B, 2, K] (module doc): one product ``[B, 2k, S] @ [B, S, K]`` of the
    centred top columns ``d = P[:, :, top] - p_bar[top]`` weighted by each half h."""
    centred = top_columns(probs_s, topk_ids) - topk_probs.unsqueeze(1)  # [B, S, k]
    weights = halves.to(probs_s.dtype)  # [2, S]
    columns = centred.transpose(1, 2)  # [B, k, S]
    product = torch.matmul(torch.cat([columns * weights[0], columns * weights[1]], 1), probs_s)
    squares = centred * centred
    sums = MovementSums(
        product, torch.matmul(columns, weights.t()), half_means,
        batch_invariant.mean(squares, 1), batch_invariant.mean(squares * squares, 1))
    return sums.movement(int(probs_s.shape[1]))


def top_columns(probs_s: Tensor, topk_ids: Tensor) -> Tensor:
    """The samples' columns of the top classes, ``P[:, :, top]`` [B, S, k] from [B, S, K] and
    ids [B, k], bit for bit: a gather copies them, the one-hot product adds one value times 1
    to zeros (``PICK_BY_PRODUCT_MAX_WIDTH`` says which runs)."""
    samples, classes = int(probs_s.shape[1]), int(probs_s.shape[2])
    if classes <= PICK_BY_PRODUCT_MAX_WIDTH:
        pick = (torch.arange(classes).unsqueeze(-1) == topk_ids.unsqueeze(1)).to(probs_s.dtype)
        return torch.matmul(probs_s, pick)
    return torch.gather(probs_s, 2, topk_ids.unsqueeze(1).expand(-1, samples, -1))


class MovementSums(NamedTuple):
    """What ``Movement`` is made of, sums over the samples that a streaming head can
    accumulate chunk by chunk (``hetexport.fused.chunked``): with the centred top columns d
    and the halves' weights w_h,

    * ``raw`` ``[d_A^T P; d_B^T P]`` [B, 2k, K], ``offset`` ``w_h^T d`` [B, k, 2],
    * ``half_means`` ``w_h^T P`` [B, 2, K],
    * ``second``, ``fourth`` ``(1/S) sum_s d^2`` and ``(1/S) sum_s d^4`` [B, k]."""

    raw: Tensor
    offset: Tensor
    half_means: Tensor
    second: Tensor
    fourth: Tensor

    def movement(self, samples: int) -> Movement:
        """All samples ``(d_A^T P + d_B^T P) / 2``; half h ``d_h^T P - (w_h^T d) (w_h^T P)``
        (centred on the half's own mean); ``sqrt(fourth / second^2 - 1) / sqrt(S)``."""
        k = int(self.offset.shape[1])
        raw_a, raw_b = self.raw[:, :k], self.raw[:, k:]
        half_a = raw_a - self.offset[..., :1] * self.half_means[:, :1]
        half_b = raw_b - self.offset[..., 1:] * self.half_means[:, 1:]
        moving = self.second > 0
        ratio = self.fourth / torch.where(moving, self.second * self.second, 1.0)
        error = torch.sqrt(torch.clamp(ratio - 1.0, min=0.0) * (1.0 / samples))
        return Movement((raw_a + raw_b) * 0.5, torch.stack([half_a, half_b], 1),
                        torch.where(moving, error, 0.0))
