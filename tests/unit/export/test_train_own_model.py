"""A user's own model through the CLI: an image folder, a torchvision backbone with weights the
user saved, head-only training, a validation folder, and an export whose defaults fit K."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from hetcontract import ModelCard
from hetexport.backbones import import_torchvision
from hetexport.checkpoint import load_checkpoint
from hetexport.cli import app
from PIL import Image
from typer.testing import CliRunner

TINY = ["--epochs", "1", "--train-mc-samples", "8", "--eval-mc-samples", "16", "--threads", "1",
        "--no-progress", "--num-factors", "2"]


def write_folder(root: Path, classes: tuple[str, ...], *, per_class: int, size: int,
                 mode: str, seed: int = 0) -> Path:
    """``root/<class>/<i>.png``: noise with one bright channel (RGB) or level (L) per class."""
    rng = np.random.default_rng(seed)
    for index, name in enumerate(classes):
        (root / name).mkdir(parents=True)
        for item in range(per_class):
            pixels = rng.integers(0, 60, size=(size, size, 3), dtype=np.uint8)
            pixels[..., index % 3] = 100 + 60 * index
            Image.fromarray(pixels).convert(mode).save(root / name / f"{item}.png")
    return root


def run(*args: str) -> str:
    result = CliRunner().invoke(app, list(args))
    assert result.exit_code == 0, result.output
    return result.output


def test_a_frozen_pretrained_torchvision_backbone_gets_a_het_head_and_exports_for_k_3(
    tmp_path: Path,
) -> None:
    photos = write_folder(tmp_path / "photos", ("cat", "dog", "fox"), per_class=6, size=40,
                          mode="RGB")
    torchvision = import_torchvision()
    torch.manual_seed(7)
    pretrained = torchvision.models.resnet18()  # what resnet18(weights="DEFAULT") would give
    torch.save(pretrained.state_dict(), tmp_path / "resnet18.pt")
    checkpoint = tmp_path / "mine.pt"
    run("train", "--image-folder", str(photos), "--image-size", "32", "--channels", "RGB",
        "--backbone", "torchvision:resnet18", "--init-weights", str(tmp_path / "resnet18.pt"),
        "--freeze-backbone", "--checkpoint", str(checkpoint),
        "--metrics", str(tmp_path / "mine.json"), *TINY)

    loaded = load_checkpoint(checkpoint)
    assert loaded.spec.backbone == "torchvision:resnet18"
    assert loaded.spec.labels == ("cat", "dog", "fox")
    assert loaded.spec.input.shape == (3, 32, 32) and loaded.spec.input.channel_order == "RGB"
    assert loaded.spec.input.mean == pytest.approx((0.485, 0.456, 0.406))  # auto: ImageNet's
    kept = loaded.model.backbone.state_dict()
    for key, value in pretrained.state_dict().items():  # frozen: exactly the given weights
        if not key.startswith("fc."):
            assert torch.equal(kept[key], value), key
    record = json.loads((tmp_path / "mine.json").read_text())
    assert record["data"]["train"] + record["data"]["validation"] == 18

    output = run("export", str(checkpoint), "--model-repo", str(tmp_path / "repo"),
                 "--name", "mine")
    card = ModelCard.model_validate_json((tmp_path / "repo" / "mine" / "model_card.json")
                                         .read_text())
    assert (card.num_classes, card.top_k, card.num_confusable) == (3, 3, 2)
    assert card.labels == ["cat", "dog", "fox"] and "parity" in output


def test_grey_images_with_a_validation_folder_train_and_export_for_k_2(tmp_path: Path) -> None:
    classes = ("no", "yes")
    train = write_folder(tmp_path / "train", classes, per_class=8, size=24, mode="L")
    val = write_folder(tmp_path / "val", classes, per_class=3, size=24, mode="L", seed=1)
    checkpoint = tmp_path / "two.pt"
    run("train", "--image-folder", str(train), "--val-folder", str(val), "--image-size", "20",
        "--channels", "L", "--checkpoint", str(checkpoint),
        "--metrics", str(tmp_path / "two.json"), *TINY)
    spec = load_checkpoint(checkpoint).spec
    assert spec.backbone == "small_cnn" and spec.input.shape == (1, 20, 20)
    record = json.loads((tmp_path / "two.json").read_text())
    assert (record["data"]["train"], record["data"]["validation"]) == (16, 6)

    run("export", str(checkpoint), "--model-repo", str(tmp_path / "repo"), "--name", "two")
    card = ModelCard.model_validate_json((tmp_path / "repo" / "two" / "model_card.json")
                                         .read_text())
    assert (card.num_classes, card.top_k, card.num_confusable) == (2, 2, 1)


def test_asking_for_more_than_the_model_has_is_still_a_clear_error(tmp_path: Path) -> None:
    train = write_folder(tmp_path / "train", ("a", "b"), per_class=4, size=16, mode="L")
    checkpoint = tmp_path / "two.pt"
    run("train", "--image-folder", str(train), "--image-size", "16", "--head", "det",
        "--checkpoint", str(checkpoint), "--metrics", str(tmp_path / "m.json"), *TINY)
    result = CliRunner().invoke(app, ["export", str(checkpoint), "--model-repo",
                                      str(tmp_path / "repo"), "--top-k", "3"])
    assert result.exit_code == 1 and "top_k must be in 1..2, got 3" in result.output


def test_mismatched_folders_and_unfitting_weights_fail_in_one_line(tmp_path: Path) -> None:
    train = write_folder(tmp_path / "train", ("a", "b"), per_class=4, size=16, mode="L")
    val = write_folder(tmp_path / "val", ("a", "c"), per_class=2, size=16, mode="L")
    common = ["--image-folder", str(train), "--image-size", "16",
              "--checkpoint", str(tmp_path / "x.pt"), "--metrics", str(tmp_path / "x.json"), *TINY]
    result = CliRunner().invoke(app, ["train", "--val-folder", str(val), *common])
    assert result.exit_code == 1
    assert "validation folder's classes ['a', 'c'] differ" in result.output
    torch.save({"conv.weight": torch.zeros(1)}, tmp_path / "other.pt")
    result = CliRunner().invoke(app, ["train", "--init-weights", str(tmp_path / "other.pt"),
                                      *common])
    assert result.exit_code == 1 and "do not fit the backbone" in result.output
    assert "Traceback" not in result.output and not (tmp_path / "x.pt").exists()
