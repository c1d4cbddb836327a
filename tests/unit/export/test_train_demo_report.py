"""The demo report's arithmetic: spread over seeds and the class-pair ranking."""

from __future__ import annotations

import numpy as np
import pytest
from hetexport.metrics import Metrics
from hetexport.studies.report import ranking_table
from hetexport.studies.summary import (
    SeedRun,
    mean_pair_correlation,
    rank_class_pairs,
    summarize,
    summarize_runs,
    within_group_precision,
)

NAMES = ("a", "b", "c", "d")
GROUPS = ((0, 1),)


def _correlation(ab: float, cd: float, ac: float) -> np.ndarray:
    matrix = np.eye(4)
    for (i, j), value in {(0, 1): ab, (2, 3): cd, (0, 2): ac}.items():
        matrix[i, j] = matrix[j, i] = value
    return matrix


def test_summary_is_the_mean_and_sample_std_over_seeds() -> None:
    summary = summarize([0.5, 0.7, 0.9])
    assert summary.mean == pytest.approx(0.7) and summary.std == pytest.approx(0.2)
    assert summarize([0.4]).std == 0.0


def test_runs_are_summarised_per_head_on_the_test_metrics() -> None:
    runs = [SeedRun(head, seed, 1, 1.0, Metrics(0, 0, 0), Metrics(top1, nll, 0.1))
            for head, seed, top1, nll in [("het", 0, 0.8, 0.5), ("het", 1, 0.9, 0.3),
                                          ("det", 0, 0.7, 0.6)]]
    summary = summarize_runs(runs)
    assert summary["het"]["top1"].mean == pytest.approx(0.85)
    assert summary["het"]["nll"].values == (0.5, 0.3)
    assert summary["det"]["nll"].mean == pytest.approx(0.6)


def test_pairs_are_ranked_by_correlation_and_marked_when_inside_a_group() -> None:
    ranking = rank_class_pairs(_correlation(0.6, 0.2, -0.9), NAMES, GROUPS)
    assert [(p.first_label, p.second_label) for p in ranking[:2]] == [("a", "b"), ("c", "d")]
    assert ranking[0].within_noisy_group and not ranking[1].within_noisy_group
    assert ranking[-1].correlation == pytest.approx(-0.9)
    assert within_group_precision(ranking) == 1.0
    assert mean_pair_correlation(ranking, within=True) == pytest.approx(0.6)
    assert mean_pair_correlation(ranking, within=False) == pytest.approx((0.2 - 0.9) / 5)


def test_ranking_by_magnitude_puts_strong_negative_correlations_first() -> None:
    ranking = rank_class_pairs(_correlation(0.1, 0.2, -0.9), NAMES, GROUPS, by_magnitude=True)
    assert (ranking[0].first_label, ranking[0].second_label) == ("a", "c")
    assert within_group_precision(ranking) == 0.0


def test_centred_ranking_puts_the_most_negative_pair_first() -> None:
    ranking = rank_class_pairs(_correlation(-0.6, 0.2, -0.3), NAMES, GROUPS,
                               most_negative_first=True)
    assert [(p.first_label, p.second_label) for p in ranking[:2]] == [("a", "b"), ("a", "c")]
    assert within_group_precision(ranking) == 1.0


def test_ranking_table_shows_a_second_matrix_for_the_same_pairs() -> None:
    centred, raw = _correlation(-0.6, 0.2, -0.3), _correlation(0.4, 0.1, 0.7)
    ranking = rank_class_pairs(centred, NAMES, GROUPS, most_negative_first=True)
    table = ranking_table(ranking, rows=2, heading="centred correlation", compare=raw)
    assert table.splitlines()[0] == (
        "| rank | pair | centred correlation | raw correlation | within a noisy group |")
    assert table.splitlines()[2] == "| 1 | a / b | -0.600 | +0.400 | yes |"
