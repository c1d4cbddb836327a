"""A version is a parameter of the write: version N goes beside the existing ones with its own
card; without a version the model is replaced by version 1."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from hetcontract import InputSpec, ModelCard
from hetexport.cli import app
from hetexport.errors import ExportError
from hetexport.model import ModelSpec, build_model
from hetexport.onnx.export import build_export, export_to_repository
from hetexport.repo.layout import existing_versions, next_version, write_model
from hetexport.repo.pbtxt import parse_config
from typer.testing import CliRunner


def tiny_model(seed: int):
    torch.manual_seed(seed)
    spec = ModelSpec(num_classes=3, num_factors=1, eval_mc_samples=8, labels=("a", "b", "c"),
                     backbone_kwargs={"widths": [2, 2], "feature_dim": 8, "input_size": [8, 8]},
                     input=InputSpec(shape=(1, 8, 8), mean=(0.5,), std=(0.25,)))
    return build_model(spec).eval()


def test_version_two_goes_beside_version_one_with_its_own_card(tmp_path: Path) -> None:
    export_to_repository(tiny_model(0), tmp_path, "mine")
    first = (tmp_path / "mine" / "1" / "model.onnx").read_bytes()
    report = export_to_repository(tiny_model(1), tmp_path, "mine",
                                  version=next_version(tmp_path, "mine"))
    model_dir = tmp_path / "mine"
    assert report.version == 2 and existing_versions(model_dir) == [1, 2]
    assert report.onnx_path == model_dir / "2" / "model.onnx"
    assert (model_dir / "1" / "model.onnx").read_bytes() == first
    assert (model_dir / "2" / "model.onnx").read_bytes() != first
    card = ModelCard.model_validate_json((model_dir / "model_card.json").read_text())
    config = parse_config((model_dir / "config.pbtxt").read_text())
    assert card.version == "2" and config.model_card()["version"] == "2"
    assert report.card == card
    assert (card.top_k, card.num_confusable) == (3, 2)  # K = 3 defaults
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no leftovers


def test_without_a_version_the_model_is_replaced_by_version_one(tmp_path: Path) -> None:
    export_to_repository(tiny_model(0), tmp_path, "mine")
    export_to_repository(tiny_model(1), tmp_path, "mine", version=2)
    report = export_to_repository(tiny_model(2), tmp_path, "mine")
    assert report.version == 1 and existing_versions(tmp_path / "mine") == [1]


def test_the_written_files_are_the_built_ones_whatever_the_version(tmp_path: Path) -> None:
    built = build_export(tiny_model(0), "mine")
    written = write_model(tmp_path, built.files, version=7)
    assert (written.version_dir / "model.onnx").read_bytes() == built.onnx_model
    assert written.card == built.card.model_copy(update={"version": "7"})
    assert (written.labels_path.read_text().split(), written.versions) == (["a", "b", "c"], (7,))


def test_an_existing_version_is_refused_and_nothing_changes(tmp_path: Path) -> None:
    export_to_repository(tiny_model(0), tmp_path, "mine", version=1)
    before = sorted(p.name for p in (tmp_path / "mine").rglob("*"))
    with pytest.raises(ExportError, match="version 1 of 'mine' exists already"):
        export_to_repository(tiny_model(1), tmp_path, "mine", version=1)
    assert sorted(p.name for p in (tmp_path / "mine").rglob("*")) == before


def test_the_cli_numbers_versions_and_reports_parity(tmp_path: Path) -> None:
    from hetexport.checkpoint import save_checkpoint

    save_checkpoint(tmp_path / "m.pt", tiny_model(0))
    runner = CliRunner()
    for expected in (1, 2):
        result = runner.invoke(app, ["export", str(tmp_path / "m.pt"), "--model-repo",
                                     str(tmp_path / "repo"), "--name", "mine",
                                     "--version", "next"])
        assert result.exit_code == 0, result.output
        assert f"version {expected}" in result.output and "parity" in result.output
    card = json.loads((tmp_path / "repo" / "mine" / "model_card.json").read_text())
    assert card["version"] == "2"
    result = runner.invoke(app, ["export", str(tmp_path / "m.pt"), "--model-repo",
                                 str(tmp_path / "repo"), "--name", "mine", "--version", "2"])
    assert result.exit_code == 1 and "exists already" in result.output
    result = runner.invoke(app, ["export", str(tmp_path / "m.pt"), "--version", "latest"])
    assert result.exit_code == 2 and "'next'" in result.output
