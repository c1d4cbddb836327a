"""A directory of the user's own images, one sub-folder per class.

Typical usage::

    from hetcontract import InputSpec
    from hetexport.data import load_image_folder

    spec = InputSpec(shape=(3, 64, 64), mean=(0.5,) * 3, std=(0.25,) * 3, channel_order="RGB")
    data = load_image_folder("photos/", input_spec=spec)   # photos/cat/*.png, photos/dog/*.jpg
    data.class_names                                        # ("cat", "dog"): sorted folder names

Each image is converted to the spec's channel order (``L`` grey or ``RGB``) and resized to its
``[H, W]`` with bilinear filtering; pixels stay uint8 (normalisation happens at training time).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from hetcontract import InputSpec
from PIL import Image, UnidentifiedImageError

from hetexport.data.dataset import ImageDataset
from hetexport.data.errors import DataError

IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff"})
MIN_CLASSES = 2


def _read_image(path: Path, spec: InputSpec) -> np.ndarray:
    """One file -> uint8 ``[C, H, W]`` in the spec's channel order and size."""
    _, height, width = spec.shape
    try:
        with Image.open(path) as image:
            converted = image.convert(spec.channel_order).resize(
                (width, height), Image.Resampling.BILINEAR
            )
            pixels = np.asarray(converted, dtype=np.uint8)
    except (UnidentifiedImageError, OSError) as error:
        raise DataError(f"cannot read image {path}: {error}") from error
    return pixels[None] if pixels.ndim == 2 else pixels.transpose(2, 0, 1)


def image_folder_files(directory: Path | str) -> tuple[tuple[str, ...], list[tuple[Path, int]]]:
    """The class names (sub-folder names, sorted) and every image file with its label, in
    the order ``load_image_folder`` reads them (class by class, files sorted by name); files
    whose suffix is not an image suffix are skipped; at least two classes with images are
    required."""
    directory = Path(directory)
    if not directory.is_dir():
        raise DataError(f"image folder {directory} does not exist")
    class_dirs = sorted(path for path in directory.iterdir() if path.is_dir())
    if len(class_dirs) < MIN_CLASSES:
        raise DataError(
            f"{directory} needs at least {MIN_CLASSES} class sub-folders, found {len(class_dirs)}"
        )
    files: list[tuple[Path, int]] = []
    for label, class_dir in enumerate(class_dirs):
        found = sorted(p for p in class_dir.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        if not found:
            raise DataError(f"class folder {class_dir} holds no images")
        files += [(path, label) for path in found]
    return tuple(path.name for path in class_dirs), files


def load_image_folder(directory: Path | str, *, input_spec: InputSpec) -> ImageDataset:
    """Read ``directory/<class>/<image>`` into uint8 ``[N, C, H, W]`` and labels ``[N]``.

    Classes are the sub-folder names sorted alphabetically (label i = i-th name); the files
    and their order are ``image_folder_files``'.
    """
    class_names, files = image_folder_files(directory)
    return ImageDataset(
        images=torch.from_numpy(np.stack([_read_image(path, input_spec) for path, _ in files])),
        labels=torch.tensor([label for _, label in files], dtype=torch.int64),
        class_names=class_names,
    )
