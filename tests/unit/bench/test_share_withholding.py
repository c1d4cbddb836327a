"""The share-withholding study (``bench/share_withholding.py``, ``make
bench-share-withholding``): at a pair of limits a top class is withheld by the served rule
(either standard error over its limit, only where the head serves shares), the error counts
only the moving classes still served, and the pair chosen is the one meeting the target that
withholds least."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest

REPO_ROOT = Path(__file__).resolve().parents[3]
BENCH = REPO_ROOT / "bench" / "share_withholding.py"


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("share_withholding", BENCH)
    module = importlib.util.module_from_spec(spec)
    sys.path.insert(0, str(BENCH.parent))  # its siblings, as when run as a script
    try:
        spec.loader.exec_module(module)
        yield module
    finally:
        sys.path.remove(str(BENCH.parent))


def classes(**columns) -> dict[str, np.ndarray]:
    """Two images of two top classes each; every class moving and relevant unless told."""
    shape = (2, 2)
    base = {"error": np.zeros(shape), "relevant": np.ones(shape, bool),
            "moving": np.ones(shape, bool), "variance_error": np.zeros(shape),
            "share_error": np.zeros(shape)}
    return base | {name: np.array(value) for name, value in columns.items()}


def test_a_class_is_withheld_by_either_standard_error_and_its_error_no_longer_counts(bench):
    table = classes(error=[[0.5, 0.01], [0.02, 0.3]],
                    variance_error=[[0.5, 0.0], [0.0, 0.0]],
                    share_error=[[0.0, 0.0], [0.0, 0.2]])
    row = bench.limit_row(table, share_limit=0.1, movement_limit=0.3)
    assert row["withheld"] == pytest.approx(0.5)          # 2 of the 4 relevant classes
    assert row["mean"] == pytest.approx((0.01 + 0.02) / 2)  # each image's largest served error
    loose = bench.limit_row(table, share_limit=1.0, movement_limit=1.0)
    assert loose["withheld"] == 0.0 and loose["mean"] == pytest.approx((0.5 + 0.3) / 2)


def test_classes_the_noise_hardly_moves_count_neither_as_withheld_nor_in_the_error(bench):
    table = classes(error=[[0.9, 0.0], [0.0, 0.0]], relevant=[[False, True], [True, True]],
                    variance_error=[[0.9, 0.0], [0.0, 0.0]])
    row = bench.limit_row(table, share_limit=0.1, movement_limit=0.3)
    assert row["withheld"] == 0.0 and row["p99"] == 0.0


def test_a_class_without_served_shares_is_never_withheld(bench):
    table = classes(moving=[[False, True], [True, True]], variance_error=[[0.9, 0.0], [0.0, 0.0]])
    assert bench.limit_row(table, share_limit=0.1, movement_limit=0.3)["withheld"] == 0.0


def test_the_pair_chosen_meets_the_target_with_the_least_withheld(bench):
    rows = [{"p99": 0.2, "withheld": 0.1}, {"p99": 0.09, "withheld": 0.5},
            {"p99": 0.05, "withheld": 0.4}, {"p99": 0.08, "withheld": 0.4}]
    assert bench.least_withheld(rows) == {"p99": 0.05, "withheld": 0.4}
    assert bench.least_withheld([{"p99": 0.2, "withheld": 0.0}]) is None
