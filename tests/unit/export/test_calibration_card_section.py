"""ATC and the whole calibration: the tuning/calibration split, the card section it writes and
the choices it makes on the tuning part only."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pytest
from hetcontract import Calibration, ModelCard, OutputName
from hetcontract.decision_scores import CONFIDENCE_SCORES, PLAIN_CONFIDENCE_SCORES, confidence
from hetexport.calibration import (
    CalibrationConfig,
    atc_estimate,
    atc_threshold,
    calibrate,
    tuning_split,
)
from hetexport.calibration.conformal import conformal_quantile
from hetexport.calibration.selective import ltt_threshold


def test_atc_threshold_leaves_the_accuracy_above_it() -> None:
    confidences = np.linspace(0.1, 1.0, 10)
    correct = np.array([0, 1, 0, 1, 1, 0, 1, 1, 1, 1], dtype=bool)  # 7 of 10
    threshold = atc_threshold(confidences, correct)
    assert threshold == pytest.approx(0.4)  # the 4th smallest: 3 below it
    assert atc_estimate(confidences, threshold) == pytest.approx(0.7)


def test_atc_estimates_accuracy_on_new_images_from_the_same_source() -> None:
    rng = np.random.default_rng(0)
    confidence_source, confidence_new = rng.random(20_000), rng.random(20_000)
    correct_source = rng.random(20_000) < confidence_source  # calibrated confidences
    threshold = atc_threshold(confidence_source, correct_source)
    assert atc_estimate(confidence_new, threshold) == pytest.approx(0.5, abs=0.02)


def test_atc_with_every_answer_wrong_estimates_zero() -> None:
    assert atc_threshold(np.array([0.2, 0.9]), np.array([False, False])) is None
    assert atc_estimate(np.array([0.2, 0.9]), None) == 0.0


def test_the_tuning_split_is_seeded_disjoint_and_complete() -> None:
    tune, cal = tuning_split(1000, fraction=0.3, seed=4)
    assert len(tune) == 300 and len(cal) == 700
    assert not set(tune) & set(cal) and set(tune) | set(cal) == set(range(1000))
    again = tuning_split(1000, fraction=0.3, seed=4)
    np.testing.assert_array_equal(tune, again[0])
    with pytest.raises(ValueError):
        tuning_split(1, fraction=0.3, seed=0)


def synthetic_outputs(n: int, classes: int = 6, seed: int = 0, top_k: int = 3,
                      confusable: int = 2) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Graph outputs of a calibrated synthetic HET-like model and labels drawn from it."""
    rng = np.random.default_rng(seed)
    samples = rng.dirichlet(np.full(classes, 0.4), size=(n, 8))  # [N, S, K] per-sample
    probs = samples.mean(axis=1)
    entropy = lambda p: -(p * np.log(np.clip(p, 1e-12, 1))).sum(-1)  # noqa: E731
    order = np.argsort(-probs, axis=1, kind="stable")
    labels = np.array([rng.choice(classes, p=p) for p in probs])
    expected = entropy(samples).mean(axis=1)
    outputs = {
        OutputName.PROBS.value: probs.astype(np.float32),
        OutputName.TOPK_IDS.value: order[:, :top_k],
        OutputName.TOPK_PROBS.value: np.take_along_axis(probs, order[:, :top_k], 1).astype(
            np.float32),
        OutputName.PREDICTIVE_ENTROPY.value: entropy(probs).astype(np.float32),
        OutputName.EXPECTED_ENTROPY.value: expected.astype(np.float32),
        OutputName.MUTUAL_INFORMATION.value: (entropy(probs) - expected).astype(np.float32),
        OutputName.CONFUSABLE_IDS.value: np.stack(
            [order[:, 1:1 + confusable]] * top_k, axis=1),
        OutputName.CONFUSABLE_SHARE.value: np.full((n, top_k, confusable), 0.5, np.float32),
    }
    return outputs, labels


def test_calibrate_writes_every_level_and_what_it_was_calibrated_on() -> None:
    outputs, labels = synthetic_outputs(2000)
    section = calibrate(outputs, labels, heteroscedastic=True, label_source="noisy",
                        source="synthetic", date="2026-01-01T00:00:00+00:00")
    assert section.images == 2000 and section.tuning_images == 600
    assert section.calibration_images == 1400
    assert section.label_source == "noisy" and section.source == "synthetic"
    assert section.prediction_sets.coverages == [0.8, 0.9, 0.95, 0.99]
    assert section.prediction_sets.default_coverage == 0.9
    assert section.abstention.risks == [0.01, 0.02, 0.05, 0.1]
    assert section.abstention.default_risk == 0.05 and section.abstention.delta == 0.1
    assert section.abstention.candidates == list(CONFIDENCE_SCORES)
    estimate = section.accuracy_estimate
    top1 = outputs[OutputName.TOPK_IDS.value][:, 0]
    assert estimate.accuracy == pytest.approx(np.mean(top1 == labels))
    scores = confidence(outputs, estimate.score)
    assert atc_estimate(scores, estimate.threshold) == pytest.approx(estimate.accuracy)


def test_the_date_is_source_date_epoch_where_set_so_a_rebuild_writes_the_same_bytes(
        monkeypatch: pytest.MonkeyPatch) -> None:
    outputs, labels = synthetic_outputs(400, seed=2)
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1796684654")
    section = calibrate(outputs, labels, heteroscedastic=True, label_source="noisy")
    assert section.date == "2026-12-07T23:04:14+00:00"
    monkeypatch.delenv("SOURCE_DATE_EPOCH")
    now = dt.datetime.now(dt.UTC)
    stamped = dt.datetime.fromisoformat(
        calibrate(outputs, labels, heteroscedastic=True, label_source="noisy").date)
    assert abs((stamped - now).total_seconds()) < 60


def test_a_deterministic_head_chooses_among_the_scores_of_p_bar_only() -> None:
    outputs, labels = synthetic_outputs(800, seed=1)
    section = calibrate(outputs, labels, heteroscedastic=False, label_source="clean")
    assert section.abstention.candidates == list(PLAIN_CONFIDENCE_SCORES)
    assert {level.score for level in section.abstention.levels} <= set(PLAIN_CONFIDENCE_SCORES)


def test_thresholds_come_from_the_calibration_part_and_choices_from_the_tuning_part() -> None:
    outputs, labels = synthetic_outputs(2000, seed=2)
    section = calibrate(outputs, labels, heteroscedastic=True, label_source="clean")
    tune, cal = tuning_split(2000, fraction=0.3, seed=0)
    lac = next(row for row in section.prediction_sets.table
               if row.method == "lac" and not row.class_conditional and row.coverage == 0.9)
    probs = outputs[OutputName.PROBS.value].astype(np.float64)
    assert lac.thresholds == [conformal_quantile(1 - probs[cal, labels[cal]], 0.9)]
    wrong = outputs[OutputName.TOPK_IDS.value][:, 0] != labels
    level = section.abstention.at(0.05)
    scores = confidence(outputs, level.score)
    rule = ltt_threshold(tuning=(scores[tune], wrong[tune]), calibration=(scores[cal],
                         wrong[cal]), risk=0.05, delta=0.1)
    assert level.threshold == rule.threshold
    assert level.accepted_fraction == pytest.approx(rule.accepted / len(cal))
    # relabelling the tuning part's images moves no threshold of a fixed method
    shuffled = labels.copy()
    shuffled[tune] = np.random.default_rng(9).permutation(labels[tune])
    again = calibrate(outputs, shuffled, heteroscedastic=True, label_source="clean")
    lac_again = next(row for row in again.prediction_sets.table
                     if row.method == "lac" and not row.class_conditional
                     and row.coverage == 0.9)
    assert lac_again.thresholds == lac.thresholds


def test_sgr_is_a_configurable_procedure() -> None:
    outputs, labels = synthetic_outputs(1500, seed=3)
    section = calibrate(outputs, labels, heteroscedastic=True, label_source="clean",
                        config=CalibrationConfig(procedure="sgr"))
    assert section.abstention.procedure == "sgr"
    for level in section.abstention.levels:
        assert level.risk_bound < level.risk or level.threshold is None


def test_the_section_round_trips_through_a_model_card() -> None:
    outputs, labels = synthetic_outputs(1000, seed=4)
    section = calibrate(outputs, labels, heteroscedastic=True, label_source="noisy")
    card = ModelCard.model_validate({
        "name": "m", "head": "het", "num_classes": 6, "labels": list("abcdef"),
        "num_factors": 2, "mc_samples": 8, "temperature": 1.0, "top_k": 3,
        "num_confusable": 2, "input": {"shape": [1, 4, 4], "mean": [0.5], "std": [0.2]},
        "calibration": section.model_dump(mode="json"),
    })
    again = ModelCard.model_validate_json(card.model_dump_json())
    assert again == card and isinstance(again.calibration, Calibration)


@pytest.mark.parametrize("bad", [
    {"default_coverage": 0.85}, {"default_risk": 0.03}, {"tuning_fraction": 1.0},
    {"coverages": (0.9, 1.0)},
])
def test_invalid_configs_are_refused(bad: dict) -> None:
    with pytest.raises(ValueError):
        CalibrationConfig(**bad)
