"""Labelled held-out images to calibrate an exported model on.

Typical usage::

    held_out = load_labelled_images(Path("calibration/"), card.input, card.labels)
    held_out.images      # float32 [N, C, H, W], normalised per the card's input spec
    held_out.labels      # int64 [N], the model's class ids

``directory`` is either a directory holding the Fashion-MNIST IDX files (its TEST split is
read, with its clean labels) or an image folder ``<class>/<image>`` whose sub-folder names are
the model's labels (a label's ``/`` written as ``_``, so ``T-shirt_top`` for ``T-shirt/top``)
or its class ids (``0``, ``1``, ...). A folder may hold only some of the classes.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
from hetcontract import InputSpec

from hetexport.data.dataset import normalize
from hetexport.data.errors import DataError
from hetexport.data.fashion_mnist import load_fashion_mnist
from hetexport.data.held_out import FASHION_MNIST_TEST_IMAGES
from hetexport.data.image_folder import load_image_folder


class LabelledImages(NamedTuple):
    """Normalised images, the model's class ids for them, and where they came from."""

    images: torch.Tensor
    labels: np.ndarray
    source: str
    clean_labels: bool


def load_labelled_images(directory: Path, spec: InputSpec, labels: Sequence[str], *,
                         limit: int | None = None) -> LabelledImages:
    """The images of ``directory`` (module doc), at most ``limit`` of them (a seeded random
    subset, so that a folder's classes stay mixed), normalised per ``spec``."""
    directory = Path(directory)
    if any(directory.glob(f"{FASHION_MNIST_TEST_IMAGES}*")):
        dataset = load_fashion_mnist(directory, split="test")
        if list(dataset.class_names) != list(labels):
            raise DataError(f"{directory} holds Fashion-MNIST, whose classes are not the "
                            f"model's {list(labels)}")
        class_ids = dataset.labels.numpy()
        source, clean = f"Fashion-MNIST test split in {directory}", True
    else:
        dataset = load_image_folder(directory, input_spec=spec)
        mapping = np.array([_class_id(name, labels) for name in dataset.class_names])
        class_ids = mapping[dataset.labels.numpy()]
        source, clean = f"image folder {directory}", False
    index = np.arange(len(class_ids))
    if limit is not None and limit < len(index):
        index = np.sort(np.random.default_rng(0).permutation(len(index))[:limit])
    images = normalize(dataset.images[torch.from_numpy(index)], spec)
    return LabelledImages(images, class_ids[index].astype(np.int64), source, clean)


def _class_id(folder: str, labels: Sequence[str]) -> int:
    for class_id, label in enumerate(labels):
        if folder in (label, label.replace("/", "_"), str(class_id)):
            return class_id
    raise DataError(f"class folder {folder!r} is none of the model's labels {list(labels)} "
                    "(nor a class id)")
