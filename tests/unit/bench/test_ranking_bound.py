"""The best F1 a ranking allows (``bench/ranking_bound.py``, reported by ``make bench-audit``):
the F1 of the best threshold chosen in hindsight, the bound of every rule that flags by the
same score."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

BENCH = Path(__file__).resolve().parents[3] / "bench" / "ranking_bound.py"
_SPEC = importlib.util.spec_from_file_location("ranking_bound", BENCH)
ranking_bound = importlib.util.module_from_spec(_SPEC)
_SPEC.loader.exec_module(ranking_bound)
best_f1 = ranking_bound.best_f1


def test_a_ranking_with_every_wrong_label_on_top_allows_f1_one():
    assert best_f1(np.array([0.9, 0.8, 0.1, 0.0]), np.array([True, True, False, False])) == 1.0


def test_the_best_threshold_is_found_among_all_of_them():
    # ranks: wrong, right, wrong, right, right: flag 1 -> F1 2/3; flag 3 -> 2*2/(3+2) = 0.8
    scores = np.array([0.9, 0.7, 0.5, 0.3, 0.1])
    wrong = np.array([True, False, True, False, False])
    assert best_f1(scores, wrong) == pytest.approx(0.8)


def test_it_bounds_the_f1_of_any_threshold_on_the_same_scores():
    rng = np.random.default_rng(0)
    wrong = rng.random(500) < 0.1
    scores = wrong * 0.5 + rng.random(500)
    bound = best_f1(scores, wrong)
    for threshold in np.linspace(0, 1.5, 31):
        flagged = scores > threshold
        hits = int((flagged & wrong).sum())
        f1 = 2 * hits / (flagged.sum() + wrong.sum())
        assert f1 <= bound + 1e-12


def test_a_set_without_wrong_labels_has_nothing_to_find():
    assert best_f1(np.array([0.3, 0.2]), np.array([False, False])) == 0.0
    assert best_f1(np.array([]), np.array([], dtype=bool)) == 0.0
