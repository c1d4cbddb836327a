"""The in-memory image dataset every loader returns."""

from __future__ import annotations

from typing import NamedTuple

import torch
from hetcontract import InputSpec


class ImageDataset(NamedTuple):
    """Raw pixels and integer labels.

    ``images`` uint8 ``[N, C, H, W]`` (pixels 0..255, not yet normalised), ``labels`` int64
    ``[N]`` in ``0 .. len(class_names) - 1``.
    """

    images: torch.Tensor
    labels: torch.Tensor
    class_names: tuple[str, ...]

    def __len__(self) -> int:  # type: ignore[override]
        return int(self.labels.shape[0])

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def subset(self, index: torch.Tensor) -> ImageDataset:
        """The examples at ``index`` (int64 ``[M]``), same class names."""
        return ImageDataset(self.images[index], self.labels[index], self.class_names)


def normalize(images: torch.Tensor, spec: InputSpec) -> torch.Tensor:
    """uint8 ``[N, C, H, W]`` -> float32 ``x = (pixel / scale - mean[c]) / std[c]``."""
    mean = torch.tensor(spec.mean, dtype=torch.float32).view(1, -1, 1, 1)
    std = torch.tensor(spec.std, dtype=torch.float32).view(1, -1, 1, 1)
    return (images.to(torch.float32) / spec.scale - mean) / std
