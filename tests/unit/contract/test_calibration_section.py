"""The model card's calibration section: optional (old cards parse), validated (one method
per coverage, defaults among the levels, one threshold per class where class-conditional),
and the confidence scores decisions use, computed from the graph's outputs."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from hetcontract import MODEL_CARD_FILENAME, ModelCard, OutputName
from hetcontract.decision_scores import confidence, set_scores
from pydantic import ValidationError

ROOT = Path(__file__).resolve().parents[3]
CARD = {
    "name": "m", "head": "het", "num_classes": 3, "labels": ["a", "b", "c"],
    "num_factors": 1, "mc_samples": 8, "temperature": 1.0, "top_k": 2, "num_confusable": 1,
    "input": {"shape": [1, 4, 4], "mean": [0.5], "std": [0.2]},
}


def _row(coverage: float, method: str = "lac", *, chosen: bool = True,
         thresholds: list | None = None, class_conditional: bool = False) -> dict:
    return {"coverage": coverage, "method": method, "class_conditional": class_conditional,
            "thresholds": thresholds or [0.5], "mean_set_size": 1.2, "chosen": chosen}


def _calibration(**overrides) -> dict:
    section = {
        "date": "2026-01-01T00:00:00+00:00", "label_source": "noisy", "images": 100,
        "tuning_images": 30,
        "prediction_sets": {"default_coverage": 0.9,
                            "table": [_row(0.9), _row(0.9, "aps", chosen=False), _row(0.8)]},
        "abstention": {"procedure": "ltt", "delta": 0.1, "default_risk": 0.05,
                       "candidates": ["max_probability"],
                       "levels": [{"risk": 0.05, "score": "max_probability",
                                   "threshold": 0.8, "accepted_fraction": 0.6,
                                   "empirical_risk": 0.03, "risk_bound": 0.048}]},
        "accuracy_estimate": {"score": "negative_entropy", "threshold": -0.4,
                              "accuracy": 0.8},
    }
    section.update(overrides)
    return section


def test_a_card_without_calibration_still_parses() -> None:
    assert ModelCard.model_validate(CARD).calibration is None
    for name in ("fashion_het", "fashion_det"):
        card = json.loads((ROOT / "model_repo" / name / MODEL_CARD_FILENAME).read_text())
        card.pop("calibration", None)  # as written before calibration existed
        assert ModelCard.model_validate(card).calibration is None


def test_a_card_with_calibration_offers_its_levels() -> None:
    card = ModelCard.model_validate({**CARD, "calibration": _calibration()})
    sets = card.calibration.prediction_sets
    assert sets.coverages == [0.8, 0.9]
    assert sets.chosen(0.9).method == "lac"
    assert card.calibration.abstention.at(0.05).threshold == 0.8
    assert card.calibration.calibration_images == 70
    with pytest.raises(KeyError):
        sets.chosen(0.95)


@pytest.mark.parametrize("broken", [
    {"prediction_sets": {"default_coverage": 0.9, "table": [_row(0.9), _row(0.9, "aps")]}},
    {"prediction_sets": {"default_coverage": 0.95, "table": [_row(0.9)]}},
    {"prediction_sets": {"default_coverage": 0.9,
                         "table": [_row(0.9, thresholds=[0.1, 0.2], class_conditional=True)]}},
    {"label_source": "guessed"},
])
def test_an_inconsistent_section_is_refused(broken: dict) -> None:
    with pytest.raises(ValidationError):
        ModelCard.model_validate({**CARD, "calibration": _calibration(**broken)})


def test_class_conditional_rows_carry_one_threshold_per_class() -> None:
    table = [_row(0.9, thresholds=[0.1, None, 0.3], class_conditional=True)]
    card = ModelCard.model_validate({**CARD, "calibration": _calibration(
        prediction_sets={"default_coverage": 0.9, "table": table})})
    assert card.calibration.prediction_sets.chosen(0.9).thresholds == [0.1, None, 0.3]


OUTPUTS = {
    OutputName.PROBS.value: np.array([[0.6, 0.3, 0.1], [0.4, 0.35, 0.25]], np.float32),
    OutputName.TOPK_PROBS.value: np.array([[0.6, 0.3], [0.4, 0.35]], np.float32),
    OutputName.PREDICTIVE_ENTROPY.value: np.array([0.9, 1.08], np.float32),
    OutputName.EXPECTED_ENTROPY.value: np.array([0.7, 0.6], np.float32),
    OutputName.MUTUAL_INFORMATION.value: np.array([0.2, 0.48], np.float32),
    # per top class, one confusable class: top class 0 moves to 1 (share 0.9) in row 0; in
    # row 1 its share is below MIN_CONFUSABLE_SHARE, so no class is named
    OutputName.CONFUSABLE_IDS.value: np.array([[[1], [0]], [[2], [0]]]),
    OutputName.CONFUSABLE_SHARE.value: np.array([[[0.9], [1.0]], [[0.005], [1.0]]], np.float32),
}


@pytest.mark.parametrize(("score", "expected"), [
    ("max_probability", [0.6, 0.4]),
    ("margin", [0.3, 0.05]),
    ("top_ratio", [2.0, 0.4 / 0.35]),
    ("negative_entropy", [-0.9, -1.08]),
    ("negative_expected_entropy", [-0.7, -0.6]),
    ("negative_mutual_information", [-0.2, -0.48]),
    ("confusable_margin", [0.6 - 0.3, 0.4]),
])
def test_confidence_scores_from_the_graph_outputs(score: str, expected: list) -> None:
    np.testing.assert_allclose(confidence(OUTPUTS, score), expected, rtol=1e-6)


def test_unknown_scores_are_refused() -> None:
    with pytest.raises(ValueError):
        confidence(OUTPUTS, "vibes")
    with pytest.raises(ValueError):
        set_scores(OUTPUTS[OutputName.PROBS.value], "thr")
