"""Element-wise functions and reductions written so that their ONNX graph gives an example
the same bits in any batch.

ONNX Runtime's CPU kernels are not batch-invariant in general:

* transcendental element-wise ops (``Softplus``, ``Log``, ``Exp``) run a vectorised loop over
  the flat tensor and a scalar loop over its tail (with several intra-op threads, over the
  tail of every thread's block); the two paths round differently, so a value's last bit
  depends on where it lands in the batch;
* reductions (``ReduceMean``, ``ReduceSum``) pick their loop by shape: a batch of one is
  reduced as a flat vector, a larger batch row by row, with a different summation order.

The row-wise kernels (``Softmax`` and ``LogSoftmax`` over one axis) and ``MatMul`` compute
every row with the same code whatever the number of rows, and ``Max``/``ReduceMax``, ``Add``,
``Mul``, ``Div``, ``Sqrt`` are exactly rounded wherever they run. The functions here are the
usual ones rewritten on those kernels (each equals its textbook form to float32 rounding;
``tests/unit/export/test_batch_invariant.py`` checks both):

* ``softplus(x) = log(1 + e^x) = -log_softmax([0, x])_0``: a two-entry row per value;
* ``sum(x, dim) = x @ 1`` and ``mean(x, dim) = x @ (1 / n)``: a matrix-vector product;
* ``log_mean_exp(a, dim) = log((1/n) sum_i e^{a_i}) = max_i a_i - max_i log_softmax(a)_i
  - log n``, since ``log_softmax(a)_i = a_i - LSE(a)`` for every i: the log of an average of
  probabilities from their logs, with no ``Log`` of the average itself.

Typical usage::

    log_p_bar = log_mean_exp(torch.log_softmax(scaled, -1), dim=1)   # [B, S, K] -> [B, K]
"""

from __future__ import annotations

import math

import torch
from torch import Tensor


def softplus(x: Tensor) -> Tensor:
    """``log(1 + exp(x))`` element-wise, as ``-log_softmax([0, x])_0``."""
    pair = torch.stack((torch.zeros_like(x), x), dim=-1)
    return -torch.log_softmax(pair, dim=-1)[..., 0]


def sum(x: Tensor, dim: int) -> Tensor:  # noqa: A001 - mirrors torch.sum
    """``sum_i x_i`` over ``dim`` (removed), as a product with a vector of ones."""
    return _weighted_sum(x, dim, 1.0)


def mean(x: Tensor, dim: int) -> Tensor:
    """``(1/n) sum_i x_i`` over ``dim`` (removed), as a product with a vector of 1/n."""
    return _weighted_sum(x, dim, 1.0 / x.shape[dim])


def _weighted_sum(x: Tensor, dim: int, weight: float) -> Tensor:
    """``sum_i weight * x_i`` over ``dim`` as one ``MatMul``: ``x @ w`` for the last axis of a
    matrix (one matrix-vector product over its B rows), else ``w^T @ x`` per leading index
    (``dim`` moved next to last). ONNX Runtime runs a matrix-vector product with a short
    inner axis row by row (~0.1 us a row), so [B, S, K] or [B, K, R] are never reduced that
    way: their B products ``w^T [1, n] @ [n, m]`` cost far less."""
    dim %= x.dim()
    ones = torch.full((x.shape[dim],), weight, dtype=x.dtype, device=x.device)
    if x.dim() == 2 and dim == 1:
        return torch.matmul(x, ones)
    return torch.matmul(ones.unsqueeze(0), x.movedim(dim, x.dim() - 2)).squeeze(-2)


EXPAND_MAX_WIDTH = 64
"""``per_sample`` materialises the broadcast of a [B, K] tensor over the samples when
K <= this: ONNX Runtime's broadcasting ``Add``/``Mul`` walks the output in runs of the
innermost axis, ~6x slower than same-shape operands for K = 10; for wide K the runs are long
and the copy would cost more than it saves."""


def per_sample(x: Tensor, samples: int) -> Tensor:
    """``x`` [B, K] as [B, S, K] for an element-wise op with a [B, S, K] operand: an
    ``expand`` (materialised by ONNX) for K <= ``EXPAND_MAX_WIDTH``, else a broadcast view
    [B, 1, K]. Same values either way."""
    if x.shape[-1] <= EXPAND_MAX_WIDTH:
        return x.unsqueeze(1).expand(-1, samples, -1)
    return x.unsqueeze(1)


def log_mean_exp(a: Tensor, dim: int) -> Tensor:
    """``log((1/n) sum_i exp(a_i))`` over ``dim`` (removed): ``max a - max log_softmax(a) -
    log n`` (module doc); exact where one ``a_i`` dominates, no overflow for large ``a``."""
    rows = a.movedim(dim % a.dim(), a.dim() - 1)  # ``dim`` last: ONNX Runtime's LogSoftmax
    top = rows.amax(-1)                             # and ReduceMax run fastest along it
    return top - torch.log_softmax(rows, -1).amax(-1) - math.log(rows.shape[-1])
