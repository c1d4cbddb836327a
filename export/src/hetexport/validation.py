"""Checks on images before they reach a model, so mistakes fail with a clear message.

``validate_images`` is used by ``HetClassifier.predict`` and by the ONNX runner; an exported
graph cannot check for NaN itself (the gateway checks before it calls Triton).
"""

from __future__ import annotations

import numpy as np
import torch

from hetexport.errors import InputError

ArrayLike = np.ndarray | torch.Tensor


def validate_images(images: ArrayLike, *, input_shape: tuple[int, int, int]) -> None:
    """Raise InputError unless images is a floating [B, C, H, W] batch, B >= 1, all finite.

    ``input_shape`` is the model's [C, H, W].
    """
    shape = tuple(images.shape)
    expected = "[B, " + ", ".join(str(s) for s in input_shape) + "]"
    if len(shape) != 4 or shape[1:] != tuple(input_shape) or shape[0] < 1:
        raise InputError(f"images must be {expected} (float32, normalised), got {list(shape)}")
    is_float = (
        images.is_floating_point()
        if isinstance(images, torch.Tensor)
        else np.issubdtype(images.dtype, np.floating)
    )
    if not is_float:
        raise InputError(f"images must be floating point, got {images.dtype}")
    finite = (
        bool(torch.isfinite(images).all())
        if isinstance(images, torch.Tensor)
        else bool(np.isfinite(images).all())
    )
    if not finite:
        raise InputError("images contain NaN or infinite values")
