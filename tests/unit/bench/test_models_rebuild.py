"""The rebuild comparison (``bench/models_rebuild.py``, ``make bench-rebuild``): a repository
equal to the shipped one is reported identical, a card that differs only in its calibration's
date is told apart from a different card, a different graph is run and compared on real test
images, and the shipped date is what a rebuild needs as ``SOURCE_DATE_EPOCH``."""

from __future__ import annotations

import datetime as dt
import importlib.util
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from hetcontract import MODEL_CARD_FILENAME

REPO_ROOT = Path(__file__).resolve().parents[3]
BENCH = REPO_ROOT / "bench" / "models_rebuild.py"
SHIPPED = REPO_ROOT / "model_repo"


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("models_rebuild", BENCH)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    sys.path.insert(0, str(BENCH.parent))  # its sibling provenance.py, as when run as a script
    try:
        spec.loader.exec_module(module)
        yield module
    finally:
        sys.modules.pop(spec.name, None)
        sys.path.remove(str(BENCH.parent))


@pytest.fixture(scope="module")
def test_images(bench):
    test = bench.load_fashion_mnist(bench.DEFAULT_FASHION_MNIST_DIR, split="test")
    return test.images[:64, 0].numpy(), test.labels[:64].numpy()


def copy_of_shipped(tmp_path: Path) -> Path:
    other = tmp_path / "model_repo"
    for name in ("fashion_het", "fashion_det"):
        shutil.copytree(SHIPPED / name, other / name)
    return other


def test_a_copy_of_the_shipped_repository_is_identical_and_runs_nothing(bench, tmp_path,
                                                                         test_images):
    other = copy_of_shipped(tmp_path)
    row = bench.compare_model("fashion_het", SHIPPED, other, *test_images)
    assert row["identical"] and row["graph_identical"] and row["card_identical_but_date"]
    assert row["files_differing"] == [] and "answers" not in row


def test_a_card_that_differs_only_in_its_date_is_told_apart_from_another_card(bench, tmp_path,
                                                                              test_images):
    other = copy_of_shipped(tmp_path)
    card_path = other / "fashion_het" / MODEL_CARD_FILENAME
    card = json.loads(card_path.read_text())
    card["calibration"]["date"] = "2000-01-01T00:00:00+00:00"
    card_path.write_text(json.dumps(card))
    row = bench.compare_model("fashion_het", SHIPPED, other, *test_images)
    assert row["files_differing"] == [MODEL_CARD_FILENAME]
    assert row["card_identical_but_date"] and not row["identical"]

    card["calibration"]["images"] += 1
    card_path.write_text(json.dumps(card))
    assert not bench.compare_model("fashion_het", SHIPPED, other,
                                   *test_images)["card_identical_but_date"]


def test_a_different_graph_is_run_and_its_answers_compared(bench, tmp_path, test_images):
    other = copy_of_shipped(tmp_path)
    shutil.copy(SHIPPED / "fashion_det" / bench.GRAPH, other / "fashion_het" / bench.GRAPH)
    row = bench.compare_model("fashion_het", SHIPPED, other, *test_images)
    found = row["answers"]
    assert not row["graph_identical"] and found["images"] == 64
    assert 0 < found["probs_max_abs_difference"] <= 1
    assert found["probs_p99_abs_difference"] <= found["probs_max_abs_difference"]
    assert 0 <= found["top1_agreement"] <= 1
    assert found["mutual_information_max_abs_difference"] > 0  # the plain graph's MI is 0


def test_the_shipped_epoch_is_the_shipped_calibration_date(bench):
    card = json.loads((SHIPPED / "fashion_het" / MODEL_CARD_FILENAME).read_text())
    epoch = bench.shipped_epoch(SHIPPED)
    assert dt.datetime.fromtimestamp(epoch, dt.UTC).isoformat() == card["calibration"]["date"]


def test_the_repository_at_a_revision_is_what_that_revision_committed(bench, tmp_path):
    extracted = bench.repository_at("HEAD", tmp_path)
    for relative in ("fashion_het/1/model.onnx", "fashion_det/model_card.json"):
        committed = subprocess.run(["git", "-C", str(REPO_ROOT), "show",
                                    f"HEAD:model_repo/{relative}"],
                                   check=True, capture_output=True).stdout
        assert (extracted / relative).read_bytes() == committed
    assert (tmp_path / "reports" / "demo_report.json").is_file()
