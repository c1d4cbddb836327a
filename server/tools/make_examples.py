"""Write the web page's bundled examples: one Fashion-MNIST test image per class, as PNG.

Typical usage (from the repository root)::

    .venv/bin/python server/tools/make_examples.py
    .venv/bin/python server/tools/make_examples.py --dataset-dir /path/to/fashion-mnist \
        --out server/src/hetgateway/static/examples

For each class it takes the first image of that class in the test split (``t10k``), so the
output is the same on every run, and writes ``<class id>_<slug>.png`` (28 x 28, 8-bit grey)
plus ``manifest.json``: ``{"source": ..., "examples": [{"file", "label", "class_id",
"test_index"}]}``. The page reads the manifest; the browser test uploads these files.
"""

from __future__ import annotations

import argparse
import gzip
import json
import re
import struct
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from PIL import Image

DEFAULT_DATASET_DIR = Path("/usr/share/datasets/fashion-mnist")
DEFAULT_OUT_DIR = Path(__file__).resolve().parents[1] / "src" / "hetgateway" / "static" / "examples"
IMAGES_FILE = "t10k-images-idx3-ubyte.gz"
LABELS_FILE = "t10k-labels-idx1-ubyte.gz"
MANIFEST_FILE = "manifest.json"

IDX_IMAGES_MAGIC = 2051
IDX_LABELS_MAGIC = 2049

# The dataset's class names, in class-id order (Xiao et al., 2017).
FASHION_MNIST_LABELS = (
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


class ExampleError(Exception):
    """The dataset files are missing or not IDX files of the expected kind."""


@dataclass(frozen=True)
class Example:
    file: str
    label: str
    class_id: int
    test_index: int


def read_idx_images(path: Path) -> np.ndarray:
    """IDX3 file -> uint8 array [N, H, W]."""
    data = _read_gz(path)
    magic, count, rows, cols = struct.unpack(">IIII", data[:16])
    if magic != IDX_IMAGES_MAGIC:
        raise ExampleError(f"{path}: magic {magic}, expected {IDX_IMAGES_MAGIC} (IDX images)")
    return np.frombuffer(data, dtype=np.uint8, offset=16).reshape(count, rows, cols)


def read_idx_labels(path: Path) -> np.ndarray:
    """IDX1 file -> uint8 array [N]."""
    data = _read_gz(path)
    magic, count = struct.unpack(">II", data[:8])
    if magic != IDX_LABELS_MAGIC:
        raise ExampleError(f"{path}: magic {magic}, expected {IDX_LABELS_MAGIC} (IDX labels)")
    return np.frombuffer(data, dtype=np.uint8, offset=8, count=count)


def _read_gz(path: Path) -> bytes:
    try:
        return gzip.decompress(path.read_bytes())
    except (OSError, EOFError) as exc:
        raise ExampleError(f"cannot read {path}: {exc}") from exc


def _slug(label: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", label.lower()).strip("-")


def write_examples(dataset_dir: Path, out_dir: Path) -> list[Example]:
    """Write one PNG per class and the manifest; return what was written."""
    images = read_idx_images(dataset_dir / IMAGES_FILE)
    labels = read_idx_labels(dataset_dir / LABELS_FILE)
    if len(images) != len(labels):
        raise ExampleError(f"{len(images)} images but {len(labels)} labels")
    out_dir.mkdir(parents=True, exist_ok=True)
    examples = []
    for class_id, label in enumerate(FASHION_MNIST_LABELS):
        index = int(np.flatnonzero(labels == class_id)[0])
        name = f"{class_id}_{_slug(label)}.png"
        Image.fromarray(images[index]).save(out_dir / name, optimize=True)
        examples.append(Example(file=name, label=label, class_id=class_id, test_index=index))
    manifest = {
        "source": f"Fashion-MNIST test split ({IMAGES_FILE}), first image of each class",
        "examples": [asdict(example) for example in examples],
    }
    (out_dir / MANIFEST_FILE).write_text(json.dumps(manifest, indent=2) + "\n")
    return examples


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset-dir", type=Path, default=DEFAULT_DATASET_DIR)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT_DIR)
    args = parser.parse_args(argv)
    for example in write_examples(args.dataset_dir, args.out):
        print(f"{args.out / example.file}  class {example.class_id} {example.label}")


if __name__ == "__main__":
    main()
