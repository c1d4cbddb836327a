"""Fashion-MNIST IDX loader and image-folder loader."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pytest
import torch
from hetcontract import InputSpec
from hetexport.data import (
    DEFAULT_FASHION_MNIST_DIR,
    FASHION_MNIST_LABELS,
    DataError,
    load_fashion_mnist,
    load_image_folder,
    read_idx,
    write_idx,
)
from PIL import Image

needs_fashion_mnist = pytest.mark.skipif(
    not (DEFAULT_FASHION_MNIST_DIR / "t10k-labels-idx1-ubyte.gz").is_file(),
    reason="prerequisite missing: Debian's dataset-fashion-mnist (make setup installs it)",
)


def _write_split(directory: Path, prefix: str, images: np.ndarray, labels: np.ndarray,
                 *, gz: bool) -> None:
    suffix = ".gz" if gz else ""
    write_idx(directory / f"{prefix}-images-idx3-ubyte{suffix}", images)
    write_idx(directory / f"{prefix}-labels-idx1-ubyte{suffix}", labels)


@needs_fashion_mnist
def test_reads_the_installed_fashion_mnist_test_split() -> None:
    test = load_fashion_mnist(split="test")
    assert test.images.shape == (10_000, 1, 28, 28) and test.images.dtype == torch.uint8
    assert test.labels.shape == (10_000,) and test.labels.dtype == torch.int64
    assert torch.bincount(test.labels).tolist() == [1000] * 10
    assert test.class_names == FASHION_MNIST_LABELS


def test_labels_follow_the_standard_fashion_mnist_order() -> None:
    assert FASHION_MNIST_LABELS == (
        "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
        "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
    )


@pytest.mark.parametrize("gz", [True, False])
def test_reads_idx_files_written_by_hand_gzipped_or_not(tmp_path: Path, gz: bool) -> None:
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(5, 28, 28), dtype=np.uint8)
    labels = np.array([3, 1, 4, 1, 5], dtype=np.uint8)
    _write_split(tmp_path, "train", images, labels, gz=gz)
    train = load_fashion_mnist(tmp_path, split="train")
    assert np.array_equal(train.images[:, 0].numpy(), images)
    assert train.labels.tolist() == [3, 1, 4, 1, 5]


def test_idx_header_is_big_endian_magic_then_sizes(tmp_path: Path) -> None:
    path = tmp_path / "labels-idx1-ubyte"
    path.write_bytes(bytes([0, 0, 0x08, 1, 0, 0, 0, 3, 7, 8, 9]))
    assert read_idx(path).tolist() == [7, 8, 9]


def test_a_missing_directory_or_file_is_a_data_error(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="does not exist"):
        load_fashion_mnist(tmp_path / "nowhere", split="train")
    with pytest.raises(DataError, match="t10k-images-idx3-ubyte"):
        load_fashion_mnist(tmp_path, split="test")


def test_a_truncated_or_foreign_file_is_a_data_error(tmp_path: Path) -> None:
    truncated = tmp_path / "short.gz"
    with gzip.open(truncated, "wb") as stream:
        stream.write(bytes([0, 0, 0x08, 1, 0, 0, 0, 9, 1, 2]))
    with pytest.raises(DataError, match="header says"):
        read_idx(truncated)
    foreign = tmp_path / "foreign"
    foreign.write_bytes(b"PK\x03\x04 not an idx file")
    with pytest.raises(DataError, match="magic"):
        read_idx(foreign)


def test_images_and_labels_of_different_lengths_are_rejected(tmp_path: Path) -> None:
    _write_split(tmp_path, "t10k", np.zeros((3, 28, 28), np.uint8), np.zeros(2, np.uint8),
                 gz=False)
    with pytest.raises(DataError, match="do not pair up"):
        load_fashion_mnist(tmp_path, split="test")


def _png(path: Path, color: tuple[int, int, int], size: tuple[int, int]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, color).save(path)


def test_image_folder_gives_one_class_per_sub_folder_sorted_and_resized(tmp_path: Path) -> None:
    _png(tmp_path / "dog" / "a.png", (200, 10, 10), (40, 30))
    _png(tmp_path / "cat" / "b.png", (10, 200, 10), (16, 16))
    _png(tmp_path / "cat" / "c.png", (10, 10, 200), (64, 20))
    (tmp_path / "cat" / "notes.txt").write_text("not an image")
    spec = InputSpec(shape=(3, 8, 12), mean=(0.5,) * 3, std=(0.5,) * 3, channel_order="RGB")
    data = load_image_folder(tmp_path, input_spec=spec)
    assert data.class_names == ("cat", "dog")
    assert data.labels.tolist() == [0, 0, 1]
    assert data.images.shape == (3, 3, 8, 12) and data.images.dtype == torch.uint8
    assert data.images[2, :, 4, 6].tolist() == [200, 10, 10]


def test_image_folder_converts_to_grey_when_the_spec_says_L(tmp_path: Path) -> None:
    _png(tmp_path / "a" / "x.png", (255, 255, 255), (28, 28))
    _png(tmp_path / "b" / "y.png", (0, 0, 0), (28, 28))
    spec = InputSpec(shape=(1, 28, 28), mean=(0.5,), std=(0.5,))
    data = load_image_folder(tmp_path, input_spec=spec)
    assert data.images.shape == (2, 1, 28, 28)
    assert data.images[0].unique().tolist() == [255] and data.images[1].unique().tolist() == [0]


def test_image_folder_errors_name_the_problem(tmp_path: Path) -> None:
    spec = InputSpec(shape=(1, 28, 28), mean=(0.5,), std=(0.5,))
    with pytest.raises(DataError, match="does not exist"):
        load_image_folder(tmp_path / "missing", input_spec=spec)
    _png(tmp_path / "only" / "x.png", (1, 2, 3), (4, 4))
    with pytest.raises(DataError, match="at least 2 class"):
        load_image_folder(tmp_path, input_spec=spec)
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="holds no images"):
        load_image_folder(tmp_path, input_spec=spec)
    (tmp_path / "empty" / "broken.png").write_bytes(b"not a png")
    with pytest.raises(DataError, match="cannot read image"):
        load_image_folder(tmp_path, input_spec=spec)
