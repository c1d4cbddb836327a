"""Training data: Fashion-MNIST (IDX files) and image folders, as uint8 tensors plus labels."""

from hetexport.data.dataset import ImageDataset, normalize
from hetexport.data.errors import DataError
from hetexport.data.fashion_mnist import (
    DEFAULT_FASHION_MNIST_DIR,
    FASHION_MNIST_LABELS,
    FASHION_MNIST_MEAN,
    FASHION_MNIST_STD,
    load_fashion_mnist,
    read_idx,
    write_idx,
)
from hetexport.data.held_out import held_out_images
from hetexport.data.image_folder import load_image_folder

__all__ = [
    "DEFAULT_FASHION_MNIST_DIR",
    "FASHION_MNIST_LABELS",
    "FASHION_MNIST_MEAN",
    "FASHION_MNIST_STD",
    "DataError",
    "ImageDataset",
    "held_out_images",
    "load_fashion_mnist",
    "load_image_folder",
    "normalize",
    "read_idx",
    "write_idx",
]
