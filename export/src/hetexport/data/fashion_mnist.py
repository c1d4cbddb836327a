"""Fashion-MNIST from its four IDX files (gzipped or not).

Typical usage::

    from hetexport.data import load_fashion_mnist

    train = load_fashion_mnist("/usr/share/datasets/fashion-mnist", split="train")
    train.images.shape   # torch.uint8 [60000, 1, 28, 28]
    train.labels.shape   # torch.int64 [60000]
    train.class_names    # ("T-shirt/top", "Trouser", ...)

The IDX format (LeCun et al.): a big-endian header ``0x00 0x00 <dtype> <ndim>``, then ``ndim``
big-endian uint32 sizes, then the values. Images are ``ubyte`` ``[N, 28, 28]`` (dtype 0x08,
ndim 3), labels ``ubyte`` ``[N]`` (ndim 1).
"""

from __future__ import annotations

import gzip
from pathlib import Path
from typing import Literal

import numpy as np
import torch

from hetexport.data.dataset import ImageDataset
from hetexport.data.errors import DataError

DEFAULT_FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")
"""Where Debian's ``dataset-fashion-mnist`` package installs the files."""

FASHION_MNIST_LABELS: tuple[str, ...] = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)
"""Class names in the dataset's label order (id 0 .. 9)."""

FASHION_MNIST_MEAN = 0.2860
FASHION_MNIST_STD = 0.3530
"""Per-pixel mean and standard deviation of the training images scaled to [0, 1]."""

Split = Literal["train", "test"]
_FILE_PREFIX: dict[str, str] = {"train": "train", "test": "t10k"}
_IDX_UBYTE = 0x08


def read_idx(path: Path | str) -> np.ndarray:
    """Read one IDX file (``.gz`` or plain) of unsigned bytes into an array of its shape."""
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as stream:
            raw = stream.read()
    except (OSError, EOFError) as error:
        raise DataError(f"cannot read IDX file {path}: {error}") from error
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0:
        raise DataError(f"{path} is not an IDX file (bad magic number)")
    if raw[2] != _IDX_UBYTE:
        raise DataError(f"{path}: only unsigned-byte IDX files are supported, got type {raw[2]:#x}")
    ndim = raw[3]
    header_end = 4 + 4 * ndim
    shape = tuple(int(size) for size in np.frombuffer(raw[4:header_end], dtype=">u4"))
    expected = int(np.prod(shape)) if shape else 0
    values = np.frombuffer(raw[header_end:], dtype=np.uint8)
    if values.size != expected:
        raise DataError(f"{path}: header says {shape} ({expected} bytes), file holds {values.size}")
    return values.reshape(shape)


def write_idx(path: Path | str, values: np.ndarray) -> Path:
    """Write an unsigned-byte array as an IDX file (gzipped when the name ends in ``.gz``)."""
    path = Path(path)
    array = np.ascontiguousarray(values, dtype=np.uint8)
    header = bytes([0, 0, _IDX_UBYTE, array.ndim]) + np.asarray(array.shape, dtype=">u4").tobytes()
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "wb") as stream:
        stream.write(header + array.tobytes())
    return path


def _find(directory: Path, stem: str) -> Path:
    for candidate in (directory / f"{stem}.gz", directory / stem):
        if candidate.is_file():
            return candidate
    raise DataError(f"Fashion-MNIST file {stem}[.gz] not found in {directory}")


def load_fashion_mnist(
    directory: Path | str = DEFAULT_FASHION_MNIST_DIR, *, split: Split = "train"
) -> ImageDataset:
    """Load one split of Fashion-MNIST from a directory holding the four IDX files.

    Returns images uint8 ``[N, 1, 28, 28]`` and labels int64 ``[N]`` (N = 60000 for ``train``,
    10000 for ``test``), class names in :data:`FASHION_MNIST_LABELS` order.
    """
    if split not in _FILE_PREFIX:
        raise DataError(f"unknown split {split!r}; choose 'train' or 'test'")
    directory = Path(directory)
    if not directory.is_dir():
        raise DataError(f"Fashion-MNIST directory {directory} does not exist")
    prefix = _FILE_PREFIX[split]
    images = read_idx(_find(directory, f"{prefix}-images-idx3-ubyte"))
    labels = read_idx(_find(directory, f"{prefix}-labels-idx1-ubyte"))
    if images.ndim != 3 or labels.ndim != 1 or images.shape[0] != labels.shape[0]:
        raise DataError(
            f"{directory}: images {images.shape} and labels {labels.shape} do not pair up"
        )
    if labels.size and int(labels.max()) >= len(FASHION_MNIST_LABELS):
        raise DataError(f"{directory}: label {int(labels.max())} outside 0..9")
    return ImageDataset(
        images=torch.from_numpy(images.copy()).unsqueeze(1),
        labels=torch.from_numpy(labels.astype(np.int64)),
        class_names=FASHION_MNIST_LABELS,
    )
