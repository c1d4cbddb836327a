"""What a predict request carries once its HTTP framing is gone: encoded images or raw tensors.

The routers build these from JSON or multipart; the data plane turns them into the model's
input tensor without knowing where they came from.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class EncodedImage:
    """An image file's bytes (PNG, JPEG, GIF, BMP, WebP); ``origin`` names it in errors."""

    data: bytes
    origin: str


@dataclass(frozen=True)
class RawTensor:
    """A preprocessed tensor as nested lists, ``[C, H, W]`` or ``[H, W]``."""

    values: list[Any]
    origin: str


PredictInput = EncodedImage | RawTensor
