"""A bank of standard normals for Monte Carlo sampling of the latent logits.

``u_s = mu + V z_R[s] + d * z_K[s]`` with ``z_R[s] ~ N(0, I_R)`` and ``z_K[s] ~ N(0, I_K)``;
one noise draw per class in the diagonal part (the paper's [.., S, K], not the JAX
reference's [B, S, 1], which would make the diagonal term d d^T instead of diag(d^2)).

A HET-XL head (Collier et al., ICLR 2023) draws its diagonal noise in the D-dim pre-logit
space instead: its bank's ``diag_noise`` is z_D [S, D] (``num_classes`` then reads D, the
diagonal width; heads give it as ``head.diag_noise_dim``).

Typical usage::

    noise = NoiseBank.draw(1000, num_factors=6, num_classes=10)        # shared by the batch
    noise = NoiseBank.draw(16, 6, 10, batch=32)                        # one set per example
    bank = NoiseBank.fixed(1000, 6, 10, seed=0)                        # baked into an export
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor


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
    def fixed(cls, num_samples: int, num_factors: int, num_classes: int, *, seed: int) -> NoiseBank:
        """A reproducible shared bank (CPU float32) from ``seed``: the one baked into exports.

        The same seed gives the same bank on every machine: it comes from PyTorch's CPU
        generator, drawn factor noise first, then diagonal noise.
        """
        generator = torch.Generator().manual_seed(seed)
        return cls.draw(num_samples, num_factors, num_classes, generator=generator)

    def to(
        self, device: torch.device | str | None = None, dtype: torch.dtype | None = None
    ) -> NoiseBank:
        return NoiseBank(self.factor_noise.to(device, dtype), self.diag_noise.to(device, dtype))
