"""``hetexport claims`` end to end on a tiny configuration: pairing, intervals, precision counts,
resuming, and the confusable classes of each definition."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from hetexport.class_correlation import SOFTMAX_RULE, probability_shares
from hetexport.errors import InputError
from hetexport.layers import NoiseBank
from hetexport.model import ModelSpec, build_model
from hetexport.studies.claims import (
    DET_RUNNER_UP,
    ClaimsConfig,
    choose_hyperparameters,
    first_confusable_ids,
    planned_pairs,
    run_claims,
)
from hetexport.studies.claims_report import (
    CLAIMS_JSON,
    CLAIMS_MARKDOWN,
    PLOT_FILES,
    write_claims_report,
)
from hetexport.training.experiment import FASHION_MNIST_INPUT

pytestmark = pytest.mark.usefixtures("fashion_mnist_dir")


@pytest.fixture(scope="module")
def fashion_mnist_dir() -> Path:
    from hetexport.data import DEFAULT_FASHION_MNIST_DIR

    if not (DEFAULT_FASHION_MNIST_DIR / "t10k-images-idx3-ubyte.gz").exists():
        pytest.skip("Fashion-MNIST is not installed (make setup)")
    return DEFAULT_FASHION_MNIST_DIR


def _tiny(tmp_path: Path, **overrides: object) -> ClaimsConfig:
    settings = {
        "work_dir": tmp_path / "runs",
        "demo_report": tmp_path / "absent.json", "num_factors": 2, "temperature": 0.5,
        "seeds": (0, 1), "sweep_rates": (0.0, 0.3), "sweep_seeds": (0, 1), "epochs": 1,
        "train_limit": 200, "test_limit": 100, "eval_mc_samples": 16, "bank_samples": 32,
        "train_mc_samples": 8,
        "workers": 1, "progress": False,
    }
    settings.update(overrides)
    return ClaimsConfig(**settings)


def test_pairs_at_the_main_rate_come_first_and_are_trained_once(tmp_path: Path) -> None:
    config = _tiny(tmp_path, seeds=(0, 1, 2), sweep_rates=(0.0, 0.3, 0.45))
    pairs = planned_pairs(config)
    assert pairs[:3] == [(0.3, 0), (0.3, 1), (0.3, 2)]
    assert len(pairs) == len(set(pairs)) == 3 + 2 * 2


def test_hyperparameters_come_from_the_demo_report_unless_given(tmp_path: Path) -> None:
    demo = tmp_path / "demo_report.json"
    demo.write_text(json.dumps({
        "settings": {"subset_limit": 20000},
        "grid": {"epochs": 2, "chosen": {"num_factors": 6, "temperature": 0.5},
                 "rows": [{"num_factors": 6, "temperature": 0.5, "val_nll": 0.72}]}}))
    chosen = choose_hyperparameters(_tiny(tmp_path, demo_report=demo, num_factors=None,
                                          temperature=None))
    assert (chosen.num_factors, chosen.temperature, chosen.grid_epochs) == (6, 0.5, 2)
    assert "noisy validation" in chosen.source
    assert choose_hyperparameters(_tiny(tmp_path, demo_report=demo)).num_factors == 2
    with pytest.raises(InputError, match="run the demo first"):
        choose_hyperparameters(_tiny(tmp_path, num_factors=None))


def test_first_confusable_class_by_each_definition() -> None:
    torch.manual_seed(0)
    spec = ModelSpec(num_classes=10, head="het",
                     backbone_kwargs={"widths": [4, 8], "feature_dim": 16}, num_factors=3,
                     temperature=0.5, eval_mc_samples=64, train_mc_samples=8,
                     labels=tuple(str(i) for i in range(10)), input=FASHION_MNIST_INPUT)
    model = build_model(spec)
    images = torch.randn(12, 1, 28, 28)
    bank = NoiseBank.fixed(64, 3, 10, seed=0)
    found = first_confusable_ids(model, images, bank, batch_size=5)
    output = model.predict(images, noise=bank)
    top1 = output.probs.argmax(-1)
    assert found.top1.tolist() == top1.tolist()
    shares = probability_shares(output.sample_probs, top1[:, None], rule=SOFTMAX_RULE)[:, 0]
    shares[torch.arange(12), top1] = -np.inf
    assert found.first["probability_share"].tolist() == shares.argmax(-1).tolist()
    runner_up = output.probs.argsort(-1, descending=True)[:, 1]
    assert found.first["runner_up"].tolist() == runner_up.tolist()
    for ids in found.first.values():
        assert not np.any(ids == found.top1)


def test_tiny_run_writes_consistent_intervals_and_resumes(tmp_path: Path) -> None:
    config, reports = _tiny(tmp_path), tmp_path / "reports"
    first = run_claims(config)
    result = write_claims_report(first, reports)
    report = json.loads(result.report_json.read_text())
    assert result.report_json.name == CLAIMS_JSON and result.report_markdown.name == CLAIMS_MARKDOWN
    for name in PLOT_FILES.values():
        assert (reports / name).stat().st_size > 0
    runs = report["runs"]
    assert len(runs) == len(planned_pairs(config))
    main = [run for run in runs if run["noise_rate"] == 0.3]
    for metric in ("top1", "nll", "ece"):
        expected = [run["het"]["test"][metric] - run["det"]["test"][metric] for run in main]
        diff = report["main"]["het_minus_det"][metric]
        assert diff["differences"] == pytest.approx(expected)
        assert diff["low"] <= diff["mean"] <= diff["high"]
        assert report["sweep"]["0.3"][metric] == diff  # the sweep reuses the main runs
    for run in main:  # paired: both heads saw the same seed's data
        assert run["het"]["seed"] == run["det"]["seed"] == run["seed"]
        counts = run["precision"]
        assert counts["probability_share"][1] == counts["latent_correlation"][1] == \
            counts["runner_up"][1]
        assert all(0 <= hits <= total for hits, total in counts.values())
    pooled = report["confusable_precision"]["table"][DET_RUNNER_UP]["pooled"]
    assert pooled["total"] == sum(run["precision"][DET_RUNNER_UP][1] for run in main)
    assert all(run["precision"] is None for run in runs if run["noise_rate"] == 0.0)
    markdown = result.report_markdown.read_text()
    assert "95 %" in markdown and "R = 2, tau = 0.5" in markdown

    again = run_claims(config)  # every pair is stored: nothing is retrained
    rewritten = write_claims_report(again, reports)
    assert json.loads(rewritten.report_json.read_text())["runs"] == runs
    assert again.seconds < first.seconds / 2

    # more seeds planned than trained, without training: the finished pairs, the rest listed
    partial = write_claims_report(
        run_claims(_tiny(tmp_path, seeds=(0, 1, 2), train_missing=False)), reports)
    report = json.loads(partial.report_json.read_text())
    assert report["missing_pairs"] == [[0.3, 2]]
    assert report["main"]["seeds"] == [0, 1]
    assert "NOT TRAINED" in partial.report_markdown.read_text()
