"""Element-wise functions and reductions written so that their ONNX graph gives an example
the same bits in any batch.

ONNX Runtime's CPU kernels are not batch-invariant in general:

* transcendental element-wise ops written with Eigen (``Softplus``, ``Log``) run a vectorised
  loop over the flat tensor and a scalar loop over its tail (with several intra-op threads,
  over the tail of every thread's block); the two paths round differently, so a value's last
  bit depends on where it lands in the batch. ``Exp`` is MLAS's (``MlasComputeExp``), whose
  tail goes through the same vector code on a masked or broadcast load: every element is
  rounded alike, and the served head uses it;
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
  probabilities from their logs, with no ``Log`` of the average itself;
* ``log_unit(q)``, the natural log of numbers in (0, 1] from ``Sqrt``, ``Div``, ``Mul`` and
  ``Add`` alone (``q^(1/64)`` by six square roots, then the ``atanh`` series).

A reduced axis's length (``sum``, ``mean``) is read as a Python int, so in a traced graph it is
a constant, not a ``Shape`` computation: reduce only axes whose length is fixed (samples,
classes), never the batch.

Typical usage::

    log_p_bar = log_mean_exp(torch.log_softmax(scaled, -1), dim=1)   # [B, S, K] -> [B, K]
"""

from __future__ import annotations

import math

import torch
from torch import Tensor


def softplus(x: Tensor) -> Tensor:
    """``log(1 + exp(x))`` element-wise, as ``-log_softmax([0, x])_0`` (the 0 padded in)."""
    pair = torch.nn.functional.pad(x.unsqueeze(-1), (1, 0))
    return -torch.log_softmax(pair, dim=-1)[..., 0]


def sum(x: Tensor, dim: int) -> Tensor:  # noqa: A001 - mirrors torch.sum
    """``sum_i x_i`` over ``dim`` (removed), as a product with a vector of ones."""
    return _weighted_sum(x, dim, 1.0)


def mean(x: Tensor, dim: int) -> Tensor:
    """``(1/n) sum_i x_i`` over ``dim`` (removed), as a product with a vector of 1/n."""
    return _weighted_sum(x, dim, 1.0 / _static(x.shape[dim]))


def _weighted_sum(x: Tensor, dim: int, weight: float) -> Tensor:
    """``sum_i weight * x_i`` over ``dim`` as one ``MatMul``: ``x @ w`` for the last axis of a
    matrix (one matrix-vector product over its B rows), else ``w^T @ x`` per leading index
    (``dim`` moved next to last). ONNX Runtime runs a matrix-vector product with a short
    inner axis row by row (~0.1 us a row), so [B, S, K] or [B, K, R] are never reduced that
    way: their B products ``w^T [1, n] @ [n, m]`` cost far less."""
    dim %= x.dim()
    ones = torch.full((_static(x.shape[dim]),), weight, dtype=x.dtype, device=x.device)
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


def _static(length: int | Tensor) -> int:
    """An axis length as a plain int: a constant of a traced graph (lengths of the samples
    and classes axes are fixed by the model; module doc)."""
    return int(length)


LOG_UNIT_FLOOR = 1e-12
"""``log_unit`` clamps its input to at least this: ``q log q`` for smaller q is below 3e-11,
nothing an entropy can show in float32."""
LOG_UNIT_ROOTS = 6
"""Square roots before the series: ``t = q^(1/64)`` lies in [0.65, 1] for q >= 1e-12, where
the series' first omitted term is below 1e-9 and the rounding of t (one ulp) becomes an
absolute error of at most 64 ulp(1) = 8e-6 in log q."""
_ATANH_SERIES = (1.0 / 11.0, 1.0 / 9.0, 1.0 / 7.0, 1.0 / 5.0, 1.0 / 3.0, 1.0)


def log_unit(q: Tensor) -> Tensor:
    """``log q`` for q in (0, 1] (clamped to ``LOG_UNIT_FLOOR``) from exactly rounded
    operations: ``t = q^(2^-n)`` by n square roots, ``y = (t - 1) / (t + 1)``,
    ``log q = 2^n log t = 2^(n+1) atanh(y) = 2^(n+1) y (1 + y^2/3 + y^4/5 + ... + y^10/11)``."""
    t = torch.clamp(q, min=LOG_UNIT_FLOOR)
    for _ in range(LOG_UNIT_ROOTS):
        t = torch.sqrt(t)
    y = (t - 1.0) / (t + 1.0)
    y2 = y * y
    series = y2 * _ATANH_SERIES[0] + _ATANH_SERIES[1]
    for coefficient in _ATANH_SERIES[2:]:
        series = series * y2 + coefficient
    return y * series * float(2 << LOG_UNIT_ROOTS)


def log_mean_exp(a: Tensor, dim: int) -> Tensor:
    """``log((1/n) sum_i exp(a_i))`` over ``dim`` (removed): ``max a - max log_softmax(a) -
    log n`` (module doc); exact where one ``a_i`` dominates, no overflow for large ``a``."""
    rows = a.movedim(dim % a.dim(), a.dim() - 1)  # ``dim`` last: ONNX Runtime's LogSoftmax
    top = rows.amax(-1)                             # and ReduceMax run fastest along it
    return top - torch.log_softmax(rows, -1).amax(-1) - math.log(rows.shape[-1])
