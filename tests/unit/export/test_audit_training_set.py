"""``hetexport audit --image-folder DIR``: every image of a training set gets out-of-sample
probabilities from k-fold models and is scored and written like ``hetclient audit`` (same CSV,
summary, page and PNG sheet)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from hetcontract.audit import read_audit_csv
from hetexport.cli import app
from PIL import Image
from typer.testing import CliRunner

CLASSES = ("cat", "dog", "fox")
PER_CLASS = 8


def grey_folder(root: Path) -> Path:
    """``root/<class>/<i>.png``, 16 x 16 grey images, a brighter level per class."""
    rng = np.random.default_rng(0)
    for index, name in enumerate(CLASSES):
        (root / name).mkdir(parents=True)
        for item in range(PER_CLASS):
            pixels = rng.integers(0, 40, size=(16, 16)) + 80 * index
            Image.fromarray(pixels.astype(np.uint8)).save(root / name / f"{item}.png")
    return root


def test_a_training_folder_is_audited_with_k_fold_models_into_the_shared_files(
    tmp_path: Path,
) -> None:
    photos = grey_folder(tmp_path / "photos")
    out = tmp_path / "audit.csv"
    result = CliRunner().invoke(app, [
        "audit", "--image-folder", str(photos), "--output", str(out), "--folds", "2",
        "--epochs", "1", "--num-factors", "2", "--threads", "1", "--no-progress",
        "--image-size", "16"])
    assert result.exit_code == 0, result.output
    assert "2 fold models" in result.output and "estimated share of wrong labels" in result.output

    rows = read_audit_csv(out)
    assert len(rows) == len(CLASSES) * PER_CLASS
    assert {Path(row.path).parent.name for row in rows} == set(CLASSES)
    for row in rows:
        assert row.given_label == Path(row.path).parent.name
        assert row.given_id == CLASSES.index(row.given_label)
        assert sum(row.probs) == pytest.approx(1.0, abs=1e-4)
        assert row.latent_probs is not None                      # a HET model's noise-free part
        assert sum(row.latent_probs) == pytest.approx(1.0, abs=1e-4)
        assert 0.0 <= row.score <= 1.0 and row.flagged == (row.score > 0.5)
    summary = json.loads(out.with_name("audit.summary.json").read_text())
    assert summary["images"] == len(rows) and summary["source"] == "latent_probs"
    assert out.with_name("audit.html").is_file()
    with Image.open(out.with_name("audit.png")) as sheet:
        assert sheet.format == "PNG"
