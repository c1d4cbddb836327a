"""Turn what a caller holds into the request's inputs (``hetcontract`` ImageInput/TensorInput).

What each input type becomes:

==========================================  ===================================================
input                                        sent as
==========================================  ===================================================
``str`` or ``pathlib.Path``                  the file's bytes, base64 (``{"image": ...}``)
``bytes`` / ``bytearray`` / ``memoryview``   the bytes as they are, base64: an encoded image
                                             file (PNG, JPEG, GIF, BMP, WebP)
``PIL.Image.Image``                          encoded as PNG, base64
numpy ``uint8`` [H, W] or [H, W, C], C=1/3/4  encoded as PNG (grey, RGB, RGBA), base64
numpy floating [H, W] or [C, H, W]           a ``{"tensor": ...}`` input: already resized and
                                             normalised per the model card, sent as is
==========================================  ===================================================

Images are preprocessed by the gateway (decode, convert, resize, normalise per the model card);
tensors skip that, so their shape must be the model's input shape. Pillow and numpy are needed
only for the inputs that are Pillow or numpy objects (``pip install hetclient[images]``); a
value is recognised as one only when its library is already imported, so the SDK never imports
them itself unless it must encode a numpy array as PNG.
"""

from __future__ import annotations

import base64
import io
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from hetcontract import ImageInput, TensorInput

from hetclient.errors import InvalidInputError

ImageLike = str | os.PathLike | bytes | bytearray | memoryview | Any
"""One input: a path, encoded image bytes, a PIL image or a numpy array (see module docstring)."""

PNG_FORMAT = "PNG"
IMAGE_CHANNELS = (1, 3, 4)
"""Grey, RGB and RGBA: the PNG modes Pillow infers from [H, W], [H, W, 3], [H, W, 4]."""
TENSOR_RANKS = (2, 3)
"""[H, W] for one channel, [C, H, W] otherwise."""


def as_input_list(images: ImageLike | Sequence[ImageLike]) -> list[ImageLike]:
    """One input or a list/tuple of inputs, as a list (a str, bytes or array is ONE input)."""
    if isinstance(images, (list, tuple)):
        if not images:
            raise InvalidInputError("no images given")
        return list(images)
    return [images]


def encode_input(item: ImageLike) -> ImageInput | TensorInput:
    """One input as the contract's ``ImageInput`` (base64 file) or ``TensorInput``."""
    if isinstance(item, (str, os.PathLike)):
        return _image_from_bytes(_read_file(Path(item)))
    if isinstance(item, (bytes, bytearray, memoryview)):
        return _image_from_bytes(bytes(item))
    if _is_pil_image(item):
        return _image_from_bytes(_pil_to_png(item))
    if _is_numpy_array(item):
        return _encode_array(item)
    raise InvalidInputError(
        f"cannot send a {type(item).__name__}: give a file path, image bytes, a PIL image "
        "or a numpy array"
    )


def _read_file(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise InvalidInputError(f"cannot read image file {str(path)!r}: {exc.strerror}") from exc


def _image_from_bytes(data: bytes) -> ImageInput:
    if not data:
        raise InvalidInputError("an image is empty (0 bytes)")
    return ImageInput(image=base64.b64encode(data).decode("ascii"))


def _is_pil_image(item: object) -> bool:
    pil_image = sys.modules.get("PIL.Image")
    return pil_image is not None and isinstance(item, pil_image.Image)


def _is_numpy_array(item: object) -> bool:
    numpy = sys.modules.get("numpy")
    return numpy is not None and isinstance(item, numpy.ndarray)


def _pil_to_png(image: Any) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=PNG_FORMAT)
    return buffer.getvalue()


def _encode_array(array: Any) -> ImageInput | TensorInput:
    import numpy as np

    if array.dtype == np.uint8:
        return _image_from_bytes(_uint8_array_to_png(array))
    if np.issubdtype(array.dtype, np.floating):
        return _tensor_input(array)
    raise InvalidInputError(
        f"a numpy array of dtype {array.dtype} is neither an image (uint8 [H, W] or [H, W, C]) "
        "nor a tensor (floating [H, W] or [C, H, W])"
    )


def _uint8_array_to_png(array: Any) -> bytes:
    import numpy as np

    try:
        from PIL import Image
    except ImportError as exc:  # pragma: no cover - only without the 'images' extra
        raise InvalidInputError(
            "encoding a numpy image needs Pillow: pip install 'hetclient[images]'"
        ) from exc
    if array.ndim == 3 and array.shape[2] == 1:
        array = array[:, :, 0]
    channels = 1 if array.ndim == 2 else (array.shape[2] if array.ndim == 3 else None)
    if channels not in IMAGE_CHANNELS or min(array.shape[:2]) < 1:
        raise InvalidInputError(
            f"a uint8 image must be [H, W] or [H, W, C] with C in 1, 3, 4; got {array.shape}"
        )
    return _pil_to_png(Image.fromarray(np.ascontiguousarray(array)))


def _tensor_input(array: Any) -> TensorInput:
    if array.ndim not in TENSOR_RANKS or 0 in array.shape:
        raise InvalidInputError(
            f"a float tensor must be [H, W] or [C, H, W]; got shape {array.shape}"
        )
    import numpy as np

    if not np.isfinite(array).all():
        raise InvalidInputError("a tensor holds NaN or infinity, which JSON cannot carry")
    return TensorInput(tensor=array.astype(np.float64).tolist())
