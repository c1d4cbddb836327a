"""The `export` and `demo` commands, and clean failures (one line, exit 1, no traceback)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from hetcontract import HEAD_OUTPUTS, MODEL_CARD_PARAMETER, ModelCard
from hetexport.cli import app
from hetexport.data import DEFAULT_FASHION_MNIST_DIR, FASHION_MNIST_LABELS, read_idx
from hetexport.layers import NoiseBank
from hetexport.onnx.runner import OnnxRunner
from hetexport.studies.demo import DemoConfig, reevaluate_demo, run_demo
from hetexport.studies.demo_report import write_demo_report
from hetexport.studies.report import StudyReport
from onnx import numpy_helper
from PIL import Image
from typer.testing import CliRunner

pytestmark = pytest.mark.skipif(
    not DEFAULT_FASHION_MNIST_DIR.is_dir(),
    reason="prerequisite missing: Fashion-MNIST (make setup)",
)


@pytest.fixture(scope="module")
def het_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("trained")
    result = CliRunner().invoke(app, [
        "train", "--checkpoint", str(directory / "het.pt"), "--metrics",
        str(directory / "het.json"), "--train-limit", "300", "--test-limit", "50",
        "--num-factors", "2", "--epochs", "1", "--train-mc-samples", "4",
        "--eval-mc-samples", "8", "--threads", "1", "--no-progress",
    ])
    assert result.exit_code == 0, result.output
    return directory / "het.pt"


def _fails_cleanly(arguments: list[str], message: str) -> None:
    result = CliRunner().invoke(app, arguments)
    assert result.exit_code == 1
    assert isinstance(result.exception, SystemExit), result.exception  # not an uncaught error
    assert "error:" in result.output and message in result.output
    assert "Traceback" not in result.output


def test_export_writes_a_model_repository_entry_with_a_valid_card(
    het_checkpoint: Path, tmp_path: Path
) -> None:
    result = CliRunner().invoke(app, [
        "export", str(het_checkpoint), "--model-repo", str(tmp_path / "repo"), "--name",
        "tiny_het", "--mc-samples", "32", "--top-k", "4", "--num-confusable", "2",
    ])
    assert result.exit_code == 0, result.output
    model_dir = tmp_path / "repo" / "tiny_het"
    card = ModelCard.model_validate_json((model_dir / "model_card.json").read_text())
    assert (card.name, card.head, card.mc_samples, card.num_factors) == ("tiny_het", "het", 32, 2)
    assert (card.top_k, card.num_confusable) == (4, 2)
    assert card.labels == list(FASHION_MNIST_LABELS)
    assert "test_nll" in card.metrics and card.parity
    assert (model_dir / "labels.txt").read_text().splitlines() == list(FASHION_MNIST_LABELS)
    assert (model_dir / "1" / "model.onnx").stat().st_size > 0
    config = (model_dir / "config.pbtxt").read_text()
    assert MODEL_CARD_PARAMETER in config
    assert all(spec.name.value in config for spec in HEAD_OUTPUTS)


def test_export_chooses_s_by_the_error_asked_for_and_cards_it(
    het_checkpoint: Path, tmp_path: Path
) -> None:
    """--mc-error E: the smallest S whose p_bar p99 error on held-out images is <= E; a loose E
    gives the smallest S tried; the card holds the request and the measured error."""
    result = CliRunner().invoke(app, [
        "export", str(het_checkpoint), "--model-repo", str(tmp_path / "repo"), "--name", "m",
        "--mc-error", "1.0", "--error-images", str(DEFAULT_FASHION_MNIST_DIR),
        "--error-image-count", "8",
    ])
    assert result.exit_code == 0, result.output
    card = ModelCard.model_validate_json((tmp_path / "repo" / "m" / "model_card.json").read_text())
    mc = card.monte_carlo
    assert (card.mc_samples, mc.samples, mc.requested_p99, mc.images) == (32, 32, 1.0, 4)
    assert mc.error["probs"].p99 <= 1.0 and "S = 32" in result.output
    _fails_cleanly(["export", str(het_checkpoint), "--model-repo", str(tmp_path / "repo"),
                    "--mc-error", "0.01"], "needs held-out images")


def test_export_bakes_a_bank_fitted_on_the_selection_images_with_the_optimized_design(
    het_checkpoint: Path, tmp_path: Path
) -> None:
    """--bank-design optimized: the graph holds an antithetic, whitened bank that is not the
    moment-matched Sobol bank it started from; it needs held-out images to fit on."""
    repo = tmp_path / "repo"
    result = CliRunner().invoke(app, [
        "export", str(het_checkpoint), "--model-repo", str(repo), "--name", "fit",
        "--mc-samples", "32", "--bank-design", "optimized",
        "--error-images", str(DEFAULT_FASHION_MNIST_DIR), "--error-image-count", "8",
    ])
    assert result.exit_code == 0, result.output
    card = ModelCard.model_validate_json((repo / "fit" / "model_card.json").read_text())
    assert (card.monte_carlo.design, card.monte_carlo.samples, card.monte_carlo.images) == (
        "optimized", 32, 4)
    baked = {t.name: numpy_helper.to_array(t) for t in onnx.load(
        str(repo / "fit" / "1" / "model.onnx")).graph.initializer}
    z = np.concatenate([baked["noise_factors"], baked["noise_diag"]], 1).astype(np.float64)
    np.testing.assert_array_equal(z[:16], -z[16:])
    np.testing.assert_allclose(z.T @ z / 32, np.eye(z.shape[1]), atol=1e-5)
    start = NoiseBank.fixed(32, card.num_factors, card.num_classes, seed=card.monte_carlo.seed,
                            design="moment_matched_sobol")
    assert np.abs(baked["noise_diag"] - start.diag_noise.numpy()).max() > 1e-3
    _fails_cleanly(["export", str(het_checkpoint), "--model-repo", str(repo),
                    "--bank-design", "optimized"], "--error-images")
    _fails_cleanly(["mc-error", str(het_checkpoint), "--count", "4", "--bank-design",
                    "optimized"], "fitted")


def test_mc_error_reports_every_served_quantity_against_the_exact_integral(
    het_checkpoint: Path,
) -> None:
    result = CliRunner().invoke(app, [
        "mc-error", str(het_checkpoint), "--count", "4", "--mc-samples", "64",
    ])
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert report["images"] == 4 and report["reference_standard_error"] < 1e-3
    assert set(report["error"]) >= {"probs", "expected_entropy", "confusable_share"}


def test_export_of_a_corrupt_checkpoint_fails_with_a_clear_message(tmp_path: Path) -> None:
    corrupt = tmp_path / "corrupt.pt"
    corrupt.write_bytes(b"this is not a checkpoint")
    _fails_cleanly(["export", str(corrupt), "--model-repo", str(tmp_path / "repo")],
                   "not a readable hetexport checkpoint")
    assert not (tmp_path / "repo" / "model").exists()


def test_export_of_a_missing_checkpoint_fails_with_a_clear_message(tmp_path: Path) -> None:
    _fails_cleanly(["export", str(tmp_path / "nope.pt")], "no such checkpoint file")


def test_train_without_the_dataset_fails_with_a_clear_message(tmp_path: Path) -> None:
    _fails_cleanly(["train", "--data-dir", str(tmp_path / "no-fashion"), "--no-progress"],
                   "does not exist")


def test_train_with_an_impossible_noise_rate_fails_with_a_clear_message(tmp_path: Path) -> None:
    _fails_cleanly(["train", "--noise-rate", "0.9", "--train-limit", "50", "--no-progress",
                    "--checkpoint", str(tmp_path / "x.pt")], "noise rate")


@pytest.fixture(scope="module")
def small_demo(tmp_path_factory: pytest.TempPathFactory) -> tuple[DemoConfig, StudyReport]:
    tmp_path = tmp_path_factory.mktemp("demo")
    config = DemoConfig(
        model_repo=tmp_path / "repo", work_dir=tmp_path / "work", seeds=(0, 1), epochs=1,
        grid=((2, 1.0), (1, 0.5)),
        grid_epochs=1, sweep_rates=(0.0, 0.4), sweep_epochs=1, train_mc_samples=4,
        export_mc_samples=32, error_images=8, train_limit=300, test_limit=100, num_threads=1,
        progress=False,
    )
    return config, write_demo_report(run_demo(config), tmp_path / "reports")


def test_demo_writes_the_report_the_plots_and_both_models(
    small_demo: tuple[DemoConfig, StudyReport],
) -> None:
    config, result = small_demo
    report = json.loads(result.report_json.read_text())
    assert set(report["summary"]) == {"het", "det"}
    assert len(report["runs"]) == 4 and report["grid"]["chosen"]["num_factors"] in (1, 2)
    assert len(report["correlation"]["ranking"]) == 45
    assert len(report["noise_sweep"]["points"]) == 4
    for head in ("het", "det"):  # the summary is the mean of its seeds' runs
        runs = [run for run in report["runs"] if run["head"] == head]
        assert sorted(run["seed"] for run in runs) == [0, 1]
        for metric in ("top1", "nll", "ece"):
            values = [run["test"][metric] for run in runs]
            assert report["summary"][head][metric]["mean"] == pytest.approx(np.mean(values))
    for plot in result.plots.values():
        with Image.open(plot) as image:
            assert image.format == "PNG" and min(image.size) >= 200
            pixels = np.asarray(image.convert("L"))
        assert pixels.std() > 10, f"{plot.name} draws something"
    markdown = result.report_markdown.read_text()
    assert "| het |" in markdown and "| det |" in markdown and "class_correlation.png" in markdown
    assert all(len(run["validation_nll"]) == run["best_epoch"] == 1 for run in report["runs"])
    assert "Best epoch, of the epochs run: het seed 0: 1 of 1" in markdown


def test_each_exported_demo_model_scores_what_its_card_says(
    small_demo: tuple[DemoConfig, StudyReport],
) -> None:
    """Run the exported ONNX on the clean test images the demo scored and count its hits."""
    config, _ = small_demo
    images = read_idx(DEFAULT_FASHION_MNIST_DIR / "t10k-images-idx3-ubyte.gz")
    labels = read_idx(DEFAULT_FASHION_MNIST_DIR / "t10k-labels-idx1-ubyte.gz")
    images, labels = images[:config.test_limit], labels[:config.test_limit]
    for name in ("fashion_het", "fashion_det"):
        model_dir = config.model_repo / name
        card = ModelCard.model_validate_json((model_dir / "model_card.json").read_text())
        spec = card.input
        tensor = ((images.astype(np.float32) / spec.scale - spec.mean[0]) / spec.std[0])[:, None]
        top1 = OnnxRunner(model_dir / "1" / "model.onnx").run(tensor)["topk_ids"][:, 0]
        accuracy = float(np.mean(top1 == labels))
        # same images and weights; the exported head averages its own (fewer) MC samples
        # (the tiny demo here, 1 epoch on 300 images, may well score near chance: what is
        # checked is that the card describes the exported model)
        assert accuracy == pytest.approx(card.metrics["test_top1"], abs=0.03), (name, card.metrics)


def test_demo_het_card_records_the_bank_it_bakes_and_its_measured_error(
    small_demo: tuple[DemoConfig, StudyReport],
) -> None:
    """The seed is searched and the bank fitted on half of the held-out images and the error
    reported on the other half; the graph holds an antithetic, whitened bank fitted away from
    the moment-matched Sobol bank of the searched seed it started at."""
    config, _ = small_demo
    card = ModelCard.model_validate_json(
        (config.model_repo / "fashion_het" / "model_card.json").read_text())
    het = card.monte_carlo
    assert (het.samples, het.images, het.seeds_searched) == (32, 4, 32)
    assert het.design == "optimized"  # the demo's default (DEMO_BANK_DESIGN)
    assert het.reference_error < 1e-3
    assert set(het.error) == {"probs", "topk_probs", "predictive_entropy", "expected_entropy",
                              "mutual_information", "topk_correlation", "confusable_share"}
    assert all(0 <= e.mean <= e.p99 <= 1 for e in het.error.values())
    baked = {t.name: numpy_helper.to_array(t) for t in onnx.load(
        str(config.model_repo / "fashion_het" / "1" / "model.onnx")).graph.initializer}
    points = np.concatenate([baked["noise_factors"], baked["noise_diag"]], 1).astype(np.float64)
    np.testing.assert_allclose(points[:16], -points[16:], atol=1e-6)  # antithetic pairs
    np.testing.assert_allclose(points.T @ points / 32, np.eye(points.shape[1]), atol=1e-5)
    start = NoiseBank.fixed(32, card.num_factors, card.num_classes, seed=het.seed,
                            design="moment_matched_sobol")
    assert not np.allclose(baked["noise_diag"], start.diag_noise.numpy(), atol=1e-3)
    det = ModelCard.model_validate_json(
        (config.model_repo / "fashion_det" / "model_card.json").read_text()).monte_carlo
    assert (det.design, det.samples, det.error) == ("none", 1, {})


def test_demo_ranks_pairs_by_centred_correlation_most_negative_first_beside_the_raw_one(
    small_demo: tuple[DemoConfig, StudyReport],
) -> None:
    report = json.loads(small_demo[1].report_json.read_text())["correlation"]
    centred = [pair["correlation"] for pair in report["ranking"]]
    raw = [pair["correlation"] for pair in report["raw_ranking"]]
    assert centred == sorted(centred) and raw == sorted(raw, reverse=True)
    for key, matrix in [("ranking", "mean_over_test_and_seeds"),
                        ("raw_ranking", "raw_mean_over_test_and_seeds")]:
        pair = report[key][0]
        assert pair["correlation"] == report[matrix][pair["first"]][pair["second"]]
    assert report["ranking"][0]["correlation"] < 0
    markdown = small_demo[1].report_markdown.read_text()
    assert "centred correlation | raw correlation |" in markdown


def test_demo_reuse_checkpoints_re_evaluates_and_re_exports_without_training(
    small_demo: tuple[DemoConfig, StudyReport],
) -> None:
    config, first = small_demo
    before = json.loads(first.report_json.read_text())
    checkpoints = {path: path.read_bytes() for path in config.work_dir.glob("*.pt")}
    onnx = config.model_repo / "fashion_het" / "1" / "model.onnx"
    onnx.unlink()
    run = reevaluate_demo(config, first.report_json)
    result = write_demo_report(run, first.report_json.parent)
    report = json.loads(result.report_json.read_text())
    assert report["runs"] == before["runs"] and report["grid"] == before["grid"]
    assert report["noise_sweep"] == before["noise_sweep"]
    assert {path: path.read_bytes() for path in checkpoints} == checkpoints
    assert onnx.is_file(), "the models are exported again"
    assert "WITHOUT training" in report["reevaluation"]["what"]
    markdown = result.report_markdown.read_text()
    assert "## What this report re-ran" in markdown and "seed-0 model only" in markdown


def test_demo_reuse_checkpoints_without_a_previous_run_fails_with_a_clear_message(
    tmp_path: Path,
) -> None:
    result = CliRunner().invoke(app, [
        "demo", "--reuse-checkpoints", "--work-dir", str(tmp_path / "none"),
        "--report-dir", str(tmp_path / "reports"), "--model-repo", str(tmp_path / "repo"),
        "--no-progress",
    ])
    assert result.exit_code == 1 and "needs a previous full demo run" in result.output
