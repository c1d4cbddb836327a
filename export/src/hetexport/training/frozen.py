"""Head-only training on a frozen backbone: pre-logits computed once, the head fitted on them.

The cheap way to put a HET head on a classifier someone already has: its backbone (with the
classifier removed) stays as it is, in eval mode (batch-norm statistics frozen), and since
nothing in it changes and the images are not augmented, its pre-logits ``phi = backbone(x)``
are the same in every epoch. They are computed once for the training and validation images
and the head alone is trained on them, which costs one backbone pass per image in all instead
of one per image per epoch.

Typical usage::

    features = prelogits(model.backbone, images, batch_size=256)      # [N, D], no grad
    result = train_model(HeadOnFeatures(model.head), features, labels, val_features,
                         val_labels, config=config)                   # trains model.head
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from hetexport.backbones import eval_mode
from hetexport.layers import HeadOutput, NoiseBank


class HeadOnFeatures(nn.Module):
    """``phi [B, D] -> head -> HeadOutput``: a head trained on cached pre-logits. Its ``head``
    is the classifier's own head object, so training this trains the classifier's head."""

    def __init__(self, head: nn.Module) -> None:
        super().__init__()
        self.head = head

    def forward(self, features: Tensor, *, noise: NoiseBank | None = None) -> HeadOutput:
        return self.head(features, noise=noise)


@torch.no_grad()
def prelogits(backbone: nn.Module, images: Tensor, *, batch_size: int) -> Tensor:
    """``backbone(images)`` in eval mode, in batches of ``batch_size``: float32 [N, D]."""
    with eval_mode(backbone):
        parts = [backbone(images[start : start + batch_size])
                 for start in range(0, images.shape[0], batch_size)]
    return torch.cat(parts)


def freeze(backbone: nn.Module) -> None:
    """No gradients for the backbone's parameters (its head stays trainable)."""
    backbone.requires_grad_(False)
