"""The web page's bundled examples: what ``server/tools/make_examples.py`` writes, committed.

Specification: one 28 x 28 grey PNG per Fashion-MNIST class, the first test image of that
class, listed in ``manifest.json`` with its label and class id; regenerating them from the
dataset reproduces the committed files pixel for pixel.
"""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest
from PIL import Image

REPO_ROOT = Path(__file__).resolve().parents[3]
GENERATOR = REPO_ROOT / "server" / "tools" / "make_examples.py"
EXAMPLES_DIR = REPO_ROOT / "server" / "src" / "hetgateway" / "static" / "examples"
DATASET_DIR = Path("/usr/share/datasets/fashion-mnist")
NUM_CLASSES = 10
IMAGE_SIZE = (28, 28)


def load_generator() -> ModuleType:
    spec = importlib.util.spec_from_file_location("hetserve_make_examples", GENERATOR)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def committed_manifest() -> dict:
    return json.loads((EXAMPLES_DIR / "manifest.json").read_text())


def test_manifest_lists_one_grey_28x28_png_per_class() -> None:
    examples = committed_manifest()["examples"]

    assert [e["class_id"] for e in examples] == list(range(NUM_CLASSES))
    for example in examples:
        image = Image.open(EXAMPLES_DIR / example["file"])
        assert (image.format, image.mode, image.size) == ("PNG", "L", IMAGE_SIZE)


needs_dataset = pytest.mark.skipif(
    not DATASET_DIR.is_dir(),
    reason=f"prerequisite missing: Fashion-MNIST not installed at {DATASET_DIR}",
)


@needs_dataset
def test_regenerating_from_the_dataset_reproduces_the_committed_examples(tmp_path: Path) -> None:
    generator = load_generator()

    written = generator.write_examples(DATASET_DIR, tmp_path)

    assert json.loads((tmp_path / "manifest.json").read_text()) == committed_manifest()
    labels = generator.read_idx_labels(DATASET_DIR / generator.LABELS_FILE)
    for example in written:
        assert labels[example.test_index] == example.class_id
        fresh = np.asarray(Image.open(tmp_path / example.file))
        committed = np.asarray(Image.open(EXAMPLES_DIR / example.file))
        np.testing.assert_array_equal(fresh, committed)


@needs_dataset
def test_a_file_that_is_not_an_idx_image_file_is_refused(tmp_path: Path) -> None:
    generator = load_generator()
    labels_as_images = tmp_path / generator.IMAGES_FILE
    labels_as_images.write_bytes((DATASET_DIR / generator.LABELS_FILE).read_bytes())

    with pytest.raises(generator.ExampleError, match="IDX images"):
        generator.read_idx_images(labels_as_images)
