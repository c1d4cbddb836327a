"""`hetexport export --calibration-images` and `hetexport calibrate`: the card (file and
config.pbtxt parameter) carries thresholds computed on the exported graph's own outputs."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from hetcontract import MODEL_CARD_PARAMETER, ModelCard
from hetexport.calibration import calibrate, graph_outputs, load_labelled_images
from hetexport.cli import app
from hetexport.data import DEFAULT_FASHION_MNIST_DIR, FASHION_MNIST_LABELS, read_idx
from hetexport.repo.pbtxt import parse_config
from PIL import Image
from typer.testing import CliRunner

pytestmark = pytest.mark.skipif(
    not DEFAULT_FASHION_MNIST_DIR.is_dir(),
    reason="prerequisite missing: Fashion-MNIST (make setup)",
)


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny HET model, trained briefly and exported with clean-label calibration."""
    directory = tmp_path_factory.mktemp("calibrated")
    runner = CliRunner()
    trained = runner.invoke(app, [
        "train", "--checkpoint", str(directory / "het.pt"), "--metrics",
        str(directory / "het.json"), "--train-limit", "600", "--test-limit", "50",
        "--num-factors", "2", "--epochs", "1", "--train-mc-samples", "4",
        "--eval-mc-samples", "8", "--threads", "1", "--no-progress",
    ])
    assert trained.exit_code == 0, trained.output
    result = runner.invoke(app, [
        "export", str(directory / "het.pt"), "--model-repo", str(directory / "repo"),
        "--name", "tiny", "--mc-samples", "16", "--calibration-images",
        str(DEFAULT_FASHION_MNIST_DIR), "--calibration-count", "1500",
    ])
    assert result.exit_code == 0, result.output
    assert "calibration on 1500 clean-label images" in result.output
    return directory / "repo" / "tiny"


def _card(model_dir: Path) -> ModelCard:
    return ModelCard.model_validate_json((model_dir / "model_card.json").read_text())


def test_the_exported_card_carries_the_calibration_in_both_places(exported: Path) -> None:
    card = _card(exported)
    assert card.calibration is not None
    assert card.calibration.label_source == "clean" and card.calibration.images == 1500
    assert "Fashion-MNIST test split" in card.calibration.source
    config = parse_config((exported / "config.pbtxt").read_text())
    assert ModelCard.model_validate(config.model_card()) == card


def test_the_thresholds_are_those_of_the_exported_graphs_outputs(exported: Path) -> None:
    card = _card(exported)
    held_out = load_labelled_images(DEFAULT_FASHION_MNIST_DIR, card.input, card.labels,
                                    limit=1500)
    outputs = graph_outputs(exported / "1" / "model.onnx", held_out.images.numpy())
    again = calibrate(outputs, held_out.labels, heteroscedastic=True, label_source="clean",
                      source=card.calibration.source, date=card.calibration.date)
    assert again == card.calibration


def _image_folder(root: Path, count: int) -> Path:
    images = read_idx(DEFAULT_FASHION_MNIST_DIR / "t10k-images-idx3-ubyte.gz")[-count:]
    labels = read_idx(DEFAULT_FASHION_MNIST_DIR / "t10k-labels-idx1-ubyte.gz")[-count:]
    for index, (pixels, label) in enumerate(zip(images, labels, strict=True)):
        folder = root / FASHION_MNIST_LABELS[label].replace("/", "_")
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(pixels).save(folder / f"{index}.png")
    return root


def test_calibrate_replaces_the_section_and_keeps_the_rest_of_the_config(
    exported: Path, tmp_path: Path
) -> None:
    folder = _image_folder(tmp_path / "folder", 400)
    before = parse_config((exported / "config.pbtxt").read_text())
    result = CliRunner().invoke(app, ["calibrate", str(exported), "--images", str(folder),
                                      "--labels", "noisy"])
    assert result.exit_code == 0, result.output
    card = _card(exported)
    assert card.calibration.label_source == "noisy" and card.calibration.images == 400
    after = parse_config((exported / "config.pbtxt").read_text())
    assert json.loads(after.parameter(MODEL_CARD_PARAMETER)) == card.model_dump(mode="json")
    assert (after.outputs, after.dynamic_batching, after.max_batch_size) == (
        before.outputs, before.dynamic_batching, before.max_batch_size)


def test_a_folder_naming_an_unknown_class_fails_cleanly(exported: Path, tmp_path: Path) -> None:
    folder = _image_folder(tmp_path / "folder", 20)
    (folder / "Sandal").rename(folder / "Flip-flop")
    result = CliRunner().invoke(app, ["calibrate", str(exported), "--images", str(folder)])
    assert result.exit_code == 1 and "'Flip-flop' is none of the model's labels" in result.output
    assert "Traceback" not in result.output


def test_calibrating_something_that_is_not_a_model_fails_cleanly(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["calibrate", str(tmp_path), "--images",
                                      str(DEFAULT_FASHION_MNIST_DIR)])
    assert result.exit_code == 1 and "no readable model card" in result.output


def test_class_ids_name_folders_too(exported: Path, tmp_path: Path) -> None:
    folder = _image_folder(tmp_path / "folder", 60)
    for sub in list(folder.iterdir()):
        sub.rename(folder / str(FASHION_MNIST_LABELS.index(sub.name.replace("_", "/"))))
    card = _card(exported)
    held_out = load_labelled_images(folder, card.input, card.labels)
    expected = read_idx(DEFAULT_FASHION_MNIST_DIR / "t10k-labels-idx1-ubyte.gz")[-60:]
    assert sorted(held_out.labels.tolist()) == sorted(expected.tolist())
    assert not held_out.clean_labels and np.isfinite(held_out.images.numpy()).all()


def test_the_card_is_rewritten_through_the_repository_and_nothing_else_changes(
    exported: Path, tmp_path: Path
) -> None:
    from hetexport.repo.layout import read_files, replace_card

    model_dir = tmp_path / "repo" / "tiny"
    shutil.copytree(exported, model_dir)
    before = read_files(model_dir)
    card = _card(model_dir).model_copy(update={"calibration": None})
    replace_card(model_dir, card)
    after = read_files(model_dir)
    changed = {path for path in before.keys() | after.keys()
               if before.get(path) != after.get(path)}
    assert changed == {"config.pbtxt", "model_card.json"}
    assert _card(model_dir) == card
    config = parse_config(after["config.pbtxt"].decode())
    assert ModelCard.model_validate(config.model_card()) == card
    assert sorted(p.name for p in model_dir.parent.iterdir()) == ["tiny"]  # no staging left


def test_a_new_version_is_exported_and_calibrated_beside_the_old_one(
    exported: Path, tmp_path: Path
) -> None:
    repo = tmp_path / "repo"
    shutil.copytree(exported, repo / "tiny")
    result = CliRunner().invoke(app, [
        "export", str(exported.parent.parent / "het.pt"), "--model-repo", str(repo),
        "--name", "tiny", "--mc-samples", "16", "--version", "next",
        "--calibration-images", str(DEFAULT_FASHION_MNIST_DIR), "--calibration-count", "300",
    ])
    assert result.exit_code == 0, result.output
    assert "version 2" in result.output
    assert (repo / "tiny" / "1" / "model.onnx").is_file()
    card = _card(repo / "tiny")
    assert card.version == "2" and card.calibration.images == 300
    config = parse_config((repo / "tiny" / "config.pbtxt").read_text())
    assert ModelCard.model_validate(config.model_card()) == card
