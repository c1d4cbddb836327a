"""Entropies (nats) of the two link functions, so every head fills the same outputs.

* softmax (one label per example): ``H[p] = -sum_k p_k log p_k``;
* sigmoid (multi-label, K independent Bernoullis):
  ``H[p] = sum_k -(p_k log p_k + (1 - p_k) log(1 - p_k))``, the entropy of the joint label
  vector under independence; it lies in [0, K log 2] instead of [0, log K].

Terms with p = 0 (or 1) contribute 0 (``x log x -> 0``).
"""

from __future__ import annotations

import torch
from torch import Tensor


def _xlogx(p: Tensor) -> Tensor:
    return torch.where(p > 0, p * torch.log(torch.where(p > 0, p, torch.ones_like(p))), p * 0)


def categorical_entropy(probs: Tensor) -> Tensor:
    """``-sum_k p_k log p_k`` over the last axis: [..., K] -> [...]."""
    return -_xlogx(probs).sum(-1)


def bernoulli_entropy(probs: Tensor) -> Tensor:
    """``sum_k H_bernoulli(p_k)`` over the last axis: [..., K] -> [...]."""
    return -(_xlogx(probs) + _xlogx(1.0 - probs)).sum(-1)
