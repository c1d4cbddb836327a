"""Training end to end through the CLI, on small subsets (seconds, not minutes)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from hetexport.checkpoint import load_checkpoint
from hetexport.cli import app
from hetexport.data import DEFAULT_FASHION_MNIST_DIR
from hetexport.model import ModelSpec, build_model
from hetexport.training import TrainConfig, holdout_split, train_model
from PIL import Image
from typer.testing import CliRunner

TINY = ["--epochs", "1", "--train-mc-samples", "8", "--eval-mc-samples", "16", "--threads", "1",
        "--no-progress"]

needs_fashion_mnist = pytest.mark.skipif(
    not DEFAULT_FASHION_MNIST_DIR.is_dir(),
    reason="prerequisite missing: Fashion-MNIST (make setup)",
)


@needs_fashion_mnist
def test_train_on_noisy_fashion_mnist_writes_a_checkpoint_and_metrics_json(tmp_path: Path) -> None:
    checkpoint, metrics = tmp_path / "het.pt", tmp_path / "het.json"
    result = CliRunner().invoke(app, [
        "train", "--checkpoint", str(checkpoint), "--metrics", str(metrics),
        "--train-limit", "400", "--test-limit", "100", "--num-factors", "2",
        "--temperature", "1.5", "--noise-rate", "0.3", *TINY,
    ])
    assert result.exit_code == 0, result.output
    loaded = load_checkpoint(checkpoint)
    assert loaded.spec.head == "het" and loaded.spec.num_factors == 2
    assert loaded.spec.temperature == 1.5 and loaded.spec.labels[6] == "Shirt"
    record = json.loads(metrics.read_text())
    data = dict(record["data"])
    realised = data.pop("realised_noise_rate")
    assert data == {"train": 360, "validation": 40, "test": 100, "noise_rate": 0.3}
    # the fraction of flippable labels (~70 % of 400 images are in a noisy group) that flipped:
    # a binomial draw around the requested 0.3, standard deviation ~0.03
    assert abs(realised - 0.3) < 0.1
    assert len(record["history"]) == 1 and record["metrics"]["best_epoch"] == 1
    for key in ("val_top1", "val_nll", "val_ece", "test_top1", "test_nll", "test_ece"):
        assert np.isfinite(record["metrics"][key])
    assert loaded.metrics == record["metrics"]


def test_train_on_an_image_folder_uses_its_classes_and_input_spec(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    for name, channel in (("apples", 0), ("limes", 1)):
        (tmp_path / "photos" / name).mkdir(parents=True)
        for index in range(12):
            pixels = rng.integers(0, 60, size=(20, 20, 3), dtype=np.uint8)
            pixels[..., channel] = 220
            Image.fromarray(pixels).save(tmp_path / "photos" / name / f"{index}.png")
    checkpoint, metrics = tmp_path / "mine.pt", tmp_path / "mine.json"
    result = CliRunner().invoke(app, [
        "train", "--image-folder", str(tmp_path / "photos"), "--image-size", "16",
        "--channels", "RGB", "--head", "det", "--checkpoint", str(checkpoint),
        "--metrics", str(metrics), *TINY,
    ])
    assert result.exit_code == 0, result.output
    spec = load_checkpoint(checkpoint).spec
    assert spec.labels == ("apples", "limes") and spec.input.shape == (3, 16, 16)
    assert spec.input.channel_order == "RGB"
    record = json.loads(metrics.read_text())
    assert record["data"]["test"] is None and "test_nll" not in record["metrics"]


def test_holdout_split_is_disjoint_complete_and_seeded() -> None:
    split = holdout_split(100, validation_fraction=0.2, seed=3)
    assert len(split.validation) == 20 and len(split.train) == 80
    everything = torch.cat([split.train, split.validation]).sort().values
    assert torch.equal(everything, torch.arange(100))
    assert torch.equal(holdout_split(100, validation_fraction=0.2, seed=3).validation,
                       split.validation)
    assert not torch.equal(holdout_split(100, validation_fraction=0.2, seed=4).validation,
                           split.validation)


def test_training_keeps_the_epoch_with_the_lowest_validation_nll_and_is_seeded() -> None:
    generator = torch.Generator().manual_seed(0)
    images = torch.randn(64, 1, 28, 28, generator=generator)
    labels = torch.randint(0, 3, (64,), generator=generator)
    spec = ModelSpec(num_classes=3, head="het", num_factors=1, train_mc_samples=4,
                     eval_mc_samples=8, backbone_kwargs={"widths": [2, 4], "feature_dim": 8})
    config = TrainConfig(epochs=3, batch_size=16, seed=0, num_threads=1, progress=False)

    def run():
        torch.manual_seed(0)
        return train_model(build_model(spec), images[:48], labels[:48], images[48:],
                           labels[48:], config=config)

    first, second = run(), run()
    nlls = [record.validation.nll for record in first.history]
    assert first.best_epoch == 1 + int(np.argmin(nlls)) and len(nlls) == 3
    assert nlls == [record.validation.nll for record in second.history]
    for name, tensor in first.model.state_dict().items():
        assert torch.equal(tensor, second.model.state_dict()[name]), name


def _noise_fit(config: TrainConfig):
    """Random labels: the validation NLL stops improving after an epoch or two."""
    generator = torch.Generator().manual_seed(1)
    images = torch.randn(80, 1, 28, 28, generator=generator)
    labels = torch.randint(0, 3, (80,), generator=generator)
    spec = ModelSpec(num_classes=3, head="det", backbone_kwargs={"widths": [4, 4],
                                                                 "feature_dim": 16})
    torch.manual_seed(0)
    return train_model(build_model(spec), images[:60], labels[:60], images[60:], labels[60:],
                       config=config)


def test_training_stops_once_the_validation_nll_has_not_improved_for_patience_epochs() -> None:
    settings = {"epochs": 12, "batch_size": 10, "learning_rate": 2e-2, "seed": 0,
                "num_threads": 1, "progress": False}
    full = _noise_fit(TrainConfig(**settings))
    nlls = [record.validation.nll for record in full.history]
    patient = _noise_fit(TrainConfig(**settings, patience=2))
    # it ran up to the first epoch two past a best that nothing beat in between
    best = 1
    for epoch, nll in enumerate(nlls, start=1):
        if nll < nlls[best - 1]:
            best = epoch
        elif epoch - best >= 2:
            break
    assert len(patient.history) == epoch < len(nlls)
    assert patient.best_epoch == best
    assert [r.validation.nll for r in patient.history] == nlls[:epoch]  # same run, cut short


def test_patience_must_be_positive_and_deterministic_algorithms_are_restored() -> None:
    with pytest.raises(ValueError, match="patience"):
        TrainConfig(patience=0)
    before = torch.are_deterministic_algorithms_enabled()
    _noise_fit(TrainConfig(epochs=1, batch_size=20, num_threads=1, progress=False))
    assert torch.are_deterministic_algorithms_enabled() == before


@needs_fashion_mnist
def test_training_and_export_twice_write_the_same_bytes(tmp_path: Path) -> None:
    """``make models`` rebuilds bit for bit on one machine: a tiny train + export, once here
    and once in a fresh process, gives byte-identical checkpoints and model directories."""
    import subprocess
    import sys

    def build(root: Path, *, fresh_process: bool) -> dict[str, bytes]:
        steps = [
            ["train", "--checkpoint", str(root / "m.pt"), "--metrics", str(root / "m.json"),
             "--train-limit", "300", "--test-limit", "50", "--num-factors", "2",
             "--epochs", "2", "--patience", "1", "--train-mc-samples", "8",
             "--eval-mc-samples", "16", "--threads", "2", "--no-progress"],
            ["export", str(root / "m.pt"), "--model-repo", str(root / "repo"), "--name", "m",
             "--mc-samples", "32", "--error-images", str(DEFAULT_FASHION_MNIST_DIR),
             "--error-image-count", "16"],
        ]
        for step in steps:
            if fresh_process:
                command = [sys.executable, "-c", "from hetexport.cli import app; app()", *step]
                subprocess.run(command, check=True, capture_output=True, timeout=600)
            else:
                result = CliRunner().invoke(app, step)
                assert result.exit_code == 0, result.output
        files = {"m.pt": (root / "m.pt").read_bytes()}
        files.update({str(p.relative_to(root)): p.read_bytes()
                      for p in sorted((root / "repo").rglob("*")) if p.is_file()})
        return files

    here = build(tmp_path / "a", fresh_process=False)
    fresh = build(tmp_path / "b", fresh_process=True)
    assert sorted(here) == sorted(fresh)
    assert [name for name in here if here[name] != fresh[name]] == []
