"""A seeded hold-out split of the (noisy) training set for choosing hyperparameters."""

from __future__ import annotations

from typing import NamedTuple

import torch

DEFAULT_VALIDATION_FRACTION = 0.1


class Split(NamedTuple):
    """Disjoint int64 index tensors into the training set: ``train`` and ``validation``."""

    train: torch.Tensor
    validation: torch.Tensor


def holdout_split(
    num_examples: int, *, validation_fraction: float = DEFAULT_VALIDATION_FRACTION, seed: int = 0
) -> Split:
    """A random permutation (seeded) cut into ``round(fraction * N)`` validation examples
    (at least 1) and the rest for training."""
    if not 0.0 < validation_fraction < 1.0:
        raise ValueError(f"validation_fraction must be in (0, 1), got {validation_fraction}")
    if num_examples < 2:
        raise ValueError(f"need at least 2 examples to hold some out, got {num_examples}")
    order = torch.randperm(num_examples, generator=torch.Generator().manual_seed(seed))
    held_out = min(max(1, round(validation_fraction * num_examples)), num_examples - 1)
    return Split(train=order[held_out:].sort().values, validation=order[:held_out].sort().values)
