"""Held-out images to measure an exported head on: a Fashion-MNIST test split or an image folder.

Typical usage::

    images = held_out_images(Path("/usr/share/datasets/fashion-mnist"), card_input, limit=400)
"""

from __future__ import annotations

from pathlib import Path

import torch
from hetcontract import InputSpec

from hetexport.data.dataset import normalize
from hetexport.data.fashion_mnist import load_fashion_mnist
from hetexport.data.image_folder import load_image_folder

FASHION_MNIST_TEST_IMAGES = "t10k-images-idx3-ubyte"
DEFAULT_ERROR_IMAGES = 1000
"""Held-out images an export chooses its bank on (the first half: the seed search, and the fit
of an ``optimized`` bank) and measures its model card's errors on (the second half). With 500
fit images the demo's fitted bank was ~20 % under plain MC with S = 1000 on every integral on
unseen images in every fit tried; with 200 some fits missed (``bench/bank_fit.py``)."""


def held_out_images(directory: Path, spec: InputSpec, *, limit: int) -> torch.Tensor:
    """The first ``limit`` images, normalised per ``spec``, float32 [N, C, H, W]: the test
    split when ``directory`` holds the Fashion-MNIST IDX files, else ``directory`` read as an
    image folder (``<class>/<image>``)."""
    directory = Path(directory)
    if any(directory.glob(f"{FASHION_MNIST_TEST_IMAGES}*")):
        dataset = load_fashion_mnist(directory, split="test")
    else:
        dataset = load_image_folder(directory, input_spec=spec)
    return normalize(dataset.images[:limit], spec)
