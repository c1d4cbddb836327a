"""Turn what a caller sends into the model's input tensor, per the model card's ``InputSpec``.

An encoded image becomes ``x[c, h, w] = (pixel[c, h, w] / scale - mean[c]) / std[c]`` with
``pixel`` in the 8-bit range [0, 255] (16-bit images are scaled into it by 255 / 65535), after
conversion to the card's channel order (``L``: ITU-R 601-2 luma; ``RGB``) and a bilinear
resize to the card's ``[C, H, W]``. Transparent pixels are composited onto black, the
background of Fashion-MNIST-like data. A raw tensor must already be ``[C, H, W]`` (or
``[H, W]`` for one channel), normalised, and finite.

Typical usage::

    x = image_tensor(png_bytes, card.input, max_pixels=16_000_000)    # float32 [C, H, W]
    x = tensor_from_nested(payload["tensor"], card.input)              # float32 [C, H, W]
"""

from __future__ import annotations

import base64
import binascii
import functools
import io
from collections.abc import Sequence
from typing import Any

import numpy as np
from hetcontract import InputSpec
from PIL import Image, UnidentifiedImageError

from hetgateway.errors import InvalidImage, InvalidInput, PayloadTooLarge

ACCEPTED_FORMATS = ("PNG", "JPEG", "GIF", "BMP", "WEBP")
"""Pillow decoders the gateway lets run; every other format is refused before decoding."""

SIXTEEN_BIT_MODES = frozenset({"I;16", "I;16L", "I;16B", "I;16N", "I"})
"""Pillow modes holding 16-bit grey levels (PNG opens 16-bit grey as ``I;16`` or ``I``)."""

SIXTEEN_TO_EIGHT_BIT = 255.0 / 65535.0
"""Maps the 16-bit range [0, 65535] onto the 8-bit range [0, 255]."""

RESAMPLE = Image.Resampling.BILINEAR
"""Resize filter (antialiased when shrinking)."""

BACKGROUND = 0
"""Grey level transparent pixels are composited onto."""

NORMALISATION_CACHE_SIZE = 64
"""Distinct (mean, std) pairs whose float32 arrays are kept (one per served model card)."""

_DATA_URL_MARK = ";base64,"


def decode_base64(text: str) -> bytes:
    """Bytes of a base64 string, or of a ``data:image/...;base64,`` URL."""
    if text.startswith("data:") and _DATA_URL_MARK in text:
        text = text.split(_DATA_URL_MARK, 1)[1]
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise InvalidImage(f"'image' is not valid base64: {exc}") from exc


def open_image(data: bytes, *, max_pixels: int) -> Image.Image:
    """Open and fully decode one image, refusing bombs before their pixels are decoded.

    Pillow reads only the header in ``Image.open``; the size is checked against
    ``max_pixels`` there, before ``load()`` decompresses anything. Pillow's own global
    ``Image.MAX_IMAGE_PIXELS`` is left alone (its error is mapped too, as a second line).
    """
    if not data:
        raise InvalidImage("empty image: 0 bytes")
    try:
        image = Image.open(io.BytesIO(data), formats=ACCEPTED_FORMATS)
        width, height = image.size
        if width * height > max_pixels:
            raise PayloadTooLarge(
                f"image of {width}x{height} = {width * height} pixels exceeds the limit of "
                f"{max_pixels} pixels"
            )
        image.seek(0)
        image.load()
    except Image.DecompressionBombError as exc:
        raise PayloadTooLarge(f"image refused as a decompression bomb: {exc}") from exc
    except UnidentifiedImageError as exc:
        raise InvalidImage(
            f"not an image in an accepted format ({', '.join(ACCEPTED_FORMATS)})"
        ) from exc
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        raise InvalidImage(f"image could not be decoded: {exc}") from exc
    return image


def pixel_planes(image: Image.Image, spec: InputSpec) -> np.ndarray:
    """The image as float32 ``[C, H, W]`` pixels in [0, 255], in the card's channel order and
    size (no normalisation yet)."""
    height, width = spec.shape[1], spec.shape[2]
    if image.mode in SIXTEEN_BIT_MODES:
        grey = np.asarray(image, dtype=np.float32) * np.float32(SIXTEEN_TO_EIGHT_BIT)
        plane = Image.fromarray(grey)  # float32 -> mode "F"
        if plane.size != (width, height):
            plane = plane.resize((width, height), RESAMPLE)
        planes = np.asarray(plane, dtype=np.float32)[None]
        return np.repeat(planes, spec.shape[0], axis=0)
    converted = _flatten_alpha(image)
    if converted.mode != spec.channel_order:
        converted = converted.convert(spec.channel_order)
    if converted.size != (width, height):
        converted = converted.resize((width, height), RESAMPLE)
    pixels = np.asarray(converted, dtype=np.float32)
    return pixels[None] if pixels.ndim == 2 else np.transpose(pixels, (2, 0, 1))


def normalise(pixels: np.ndarray, spec: InputSpec) -> np.ndarray:
    """``(pixels / scale - mean[c]) / std[c]`` over float32 ``[C, H, W]``."""
    mean, std = _channel_constants(tuple(spec.mean), tuple(spec.std))
    return ((pixels / np.float32(spec.scale) - mean) / std).astype(np.float32, copy=False)


def image_tensor(data: bytes, spec: InputSpec, *, max_pixels: int) -> np.ndarray:
    """Encoded image bytes -> the model's float32 ``[C, H, W]`` input."""
    return normalise(pixel_planes(open_image(data, max_pixels=max_pixels), spec), spec)


def tensor_from_nested(values: Sequence[Any], spec: InputSpec) -> np.ndarray:
    """A JSON nested list -> float32 ``[C, H, W]``; ``[H, W]`` is accepted for one channel.

    Refuses ragged or non-numeric lists, a shape other than the card's, and NaN or infinity
    (also values that overflow float32).
    """
    try:
        array = np.asarray(values, dtype=np.float64)
    except (ValueError, TypeError) as exc:
        raise InvalidInput(f"'tensor' is not a rectangular list of numbers: {exc}") from exc
    if array.ndim == 2 and spec.shape[0] == 1:
        array = array[None]
    if array.shape != tuple(spec.shape):
        raise InvalidInput(
            f"'tensor' has shape {list(array.shape)}; the model takes {list(spec.shape)}"
            + (" (or [H, W])" if spec.shape[0] == 1 else "")
        )
    with np.errstate(over="ignore"):  # overflow becomes inf, refused just below
        tensor = array.astype(np.float32)
    if not np.isfinite(tensor).all():
        raise InvalidInput("'tensor' holds NaN or infinite values (or values beyond float32)")
    return tensor


@functools.lru_cache(maxsize=NORMALISATION_CACHE_SIZE)
def _channel_constants(
    mean: tuple[float, ...], std: tuple[float, ...]
) -> tuple[np.ndarray, np.ndarray]:
    """float32 ``[C, 1, 1]`` mean and std, made once per model card (read-only)."""
    arrays = []
    for values in (mean, std):
        array = np.asarray(values, dtype=np.float32)[:, None, None]
        array.flags.writeable = False
        arrays.append(array)
    return arrays[0], arrays[1]


def _flatten_alpha(image: Image.Image) -> Image.Image:
    """Composite a transparent image onto the ``BACKGROUND`` grey; others pass unchanged."""
    has_alpha = image.mode in ("RGBA", "LA", "PA", "La", "RGBa") or (
        image.mode == "P" and "transparency" in image.info
    )
    if not has_alpha:
        return image
    rgba = image.convert("RGBA")
    background = Image.new("RGBA", rgba.size, (BACKGROUND, BACKGROUND, BACKGROUND, 255))
    return Image.alpha_composite(background, rgba).convert("RGB")
