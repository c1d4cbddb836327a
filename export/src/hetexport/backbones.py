"""Backbones: images [B, C, H, W] -> pre-logits phi [B, D] for a HET head.

Any ``nn.Module`` with that contract works as a backbone (that is how users bring their own
model); this module holds the demo's small CNN, a by-name factory for ``ModelSpec``, a
helper that finds D and ``eval_mode``, which runs a block with a module in eval mode.

Typical usage::

    backbone = build_backbone("small_cnn", in_channels=1)
    backbone = build_backbone("mypackage.models:make_resnet", pretrained=False)   # your own
    dim = feature_dim(backbone, (1, 28, 28))
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import torch
from torch import Tensor, nn

from hetexport.errors import SpecError


class SmallCNN(nn.Module):
    """Two conv blocks and a dense layer for small grey images (Fashion-MNIST, 28x28).

    ``[B, C, H, W] -> conv3x3(w1)-ReLU-maxpool2 -> conv3x3(w2)-ReLU-maxpool2 -> flatten
    -> linear(feature_dim)-ReLU -> [B, feature_dim]``. At the defaults (8, 16, 128) it holds
    about 0.1 M parameters (about 0.5 MB of ONNX) and trains a Fashion-MNIST epoch on two
    CPU cores in well under a minute.
    """

    def __init__(
        self,
        in_channels: int = 1,
        *,
        widths: tuple[int, int] = (8, 16),
        feature_dim: int = 128,
        input_size: tuple[int, int] = (28, 28),
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        first, second = widths
        self.feature_dim = feature_dim
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, first, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(first, second, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Flatten(),
        )
        flat = second * (input_size[0] // 4) * (input_size[1] // 4)
        self.project = nn.Sequential(nn.Dropout(dropout), nn.Linear(flat, feature_dim), nn.ReLU())

    def forward(self, images: Tensor) -> Tensor:
        return self.project(self.features(images))


BUILTIN_BACKBONES: Mapping[str, Callable[..., nn.Module]] = {"small_cnn": SmallCNN}


def build_backbone(name: str, **kwargs: Any) -> nn.Module:
    """A backbone by name: a built-in (``"small_cnn"``) or ``"package.module:factory"``.

    The factory is called with ``kwargs`` and must return an ``nn.Module`` giving [B, D].
    """
    if name in BUILTIN_BACKBONES:
        return BUILTIN_BACKBONES[name](**kwargs)
    module_name, sep, attr = name.partition(":")
    if not sep or not module_name or not attr:
        known = ", ".join(sorted(BUILTIN_BACKBONES))
        raise SpecError(
            f"unknown backbone {name!r}: use one of {known} or 'package.module:factory'"
        )
    try:
        factory = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as exc:
        raise SpecError(f"cannot import backbone factory {name!r}: {exc}") from exc
    backbone = factory(**kwargs)
    if not isinstance(backbone, nn.Module):
        raise SpecError(
            f"backbone factory {name!r} returned {type(backbone).__name__}, not nn.Module"
        )
    return backbone


def feature_dim(backbone: nn.Module, input_shape: tuple[int, int, int]) -> int:
    """D of a backbone's pre-logits: its ``feature_dim`` attribute, or one dry run on zeros.

    Raises SpecError when the backbone does not give [B, D] for input [B, *input_shape].
    """
    declared = getattr(backbone, "feature_dim", None)
    if isinstance(declared, int):
        return declared
    with eval_mode(backbone), torch.no_grad():
        out = backbone(torch.zeros(2, *input_shape))
    if not isinstance(out, Tensor) or out.dim() != 2 or out.shape[0] != 2:
        shape = tuple(out.shape) if isinstance(out, Tensor) else type(out).__name__
        raise SpecError(
            f"a backbone must map [B, C, H, W] to pre-logits [B, D]; got {shape} for "
            f"input [2, {', '.join(map(str, input_shape))}] "
            "(drop its classifier, flatten its output)"
        )
    return int(out.shape[1])


@contextmanager
def eval_mode(module: nn.Module) -> Iterator[nn.Module]:
    """``module`` in eval mode inside the block; its train/eval mode is restored on leaving it,
    also on an exception."""
    was_training = module.training
    module.eval()
    try:
        yield module
    finally:
        module.train(was_training)
