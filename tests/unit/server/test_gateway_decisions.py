"""Each answer of a calibrated model carries its prediction set and its decision, equal to a
per-image numpy reference written from the definitions; requests may ask for other levels of
the card's table; an uncalibrated model answers without them and says why."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from hetcontract import MODEL_CARD_FILENAME, ModelCard, OutputName
from hetcontract.decision_scores import CONFIDENCE_SCORES
from hetgateway.answer import ANSWER_OUTPUTS, answer_outputs, build_results, result_layouts
from hetgateway.decisions import (
    DecisionTable,
    decision_support,
    resolve_levels,
)
from hetgateway.errors import InvalidInput

ROOT = Path(__file__).resolve().parents[3]
SHIPPED = ModelCard.model_validate_json(
    (ROOT / "model_repo" / "fashion_het" / MODEL_CARD_FILENAME).read_text())
"""The shipped fashion_het card: calibrated by the exporter (``hetexport demo
--calibrate-only``) on the demo's noisy-label validation split."""
UNCALIBRATED = SHIPPED.model_copy(update={"calibration": None})


def graph_outputs(card: ModelCard, batch: int, seed: int) -> dict[str, np.ndarray]:
    """Outputs shaped like the graph's: probabilities from a Dirichlet, the rest derived."""
    rng = np.random.default_rng(seed)
    k, k_max, m = card.num_classes, card.top_k, card.num_confusable
    samples = rng.dirichlet(np.full(k, 0.3), size=(batch, 6))
    probs = samples.mean(axis=1).astype(np.float32)
    order = np.argsort(-probs, axis=1, kind="stable")
    entropy = lambda p: -(p * np.log(np.clip(p, 1e-12, 1))).sum(-1)  # noqa: E731
    expected = entropy(samples).mean(axis=1)
    others = np.stack([np.roll(order, -(j + 1), axis=1)[:, :m] for j in range(k_max)], axis=1)
    return {
        OutputName.TOPK_IDS.value: order[:, :k_max].astype(np.int64),
        OutputName.TOPK_PROBS.value: np.take_along_axis(probs, order[:, :k_max], 1),
        OutputName.PREDICTIVE_ENTROPY.value: entropy(probs).astype(np.float32),
        OutputName.EXPECTED_ENTROPY.value: expected.astype(np.float32),
        OutputName.MUTUAL_INFORMATION.value: (entropy(probs) - expected).astype(np.float32),
        OutputName.TOPK_CORRELATION.value: np.tile(np.eye(k_max, dtype=np.float32),
                                                   (batch, 1, 1)),
        OutputName.CONFUSABLE_IDS.value: others.astype(np.int64),
        OutputName.CONFUSABLE_SHARE.value: rng.random((batch, k_max, m)).astype(np.float32),
        OutputName.PROBS.value: probs,
    }


# ---- the reference: one image at a time, straight from the definitions ---------------------

def reference_set(p: np.ndarray, row) -> list[int]:
    """Classes whose non-conformity score is at most their threshold, most probable first."""
    p = p.astype(np.float64)
    ranked = sorted(range(len(p)), key=lambda c: (-p[c], c))
    scores, mass = {}, 0.0
    for rank, c in enumerate(ranked, start=1):
        mass += p[c]
        if row.method == "lac":
            scores[c] = 1.0 - p[c]
        else:
            scores[c] = mass + (row.penalty * max(0, rank - row.k_reg) if row.method == "raps"
                                else 0.0)
    def bound(c: int) -> float:
        t = row.thresholds[c] if row.class_conditional else row.thresholds[0]
        return math.inf if t is None else t
    return [c for c in ranked if scores[c] <= bound(c)]


def reference_confidence(out: dict, b: int, score: str) -> float:
    top = sorted(out[OutputName.PROBS.value][b].astype(np.float64), reverse=True)
    if score == "max_probability":
        return top[0]
    if score == "margin":
        return top[0] - top[1]
    if score == "top_ratio":
        return top[0] / top[1]
    if score == "negative_entropy":
        return -float(out[OutputName.PREDICTIVE_ENTROPY.value][b])
    if score == "negative_expected_entropy":
        return -float(out[OutputName.EXPECTED_ENTROPY.value][b])
    if score == "negative_mutual_information":
        return -float(out[OutputName.MUTUAL_INFORMATION.value][b])
    assert score == "confusable_margin"
    ids = out[OutputName.CONFUSABLE_IDS.value][b, 0]
    shares = out[OutputName.CONFUSABLE_SHARE.value][b, 0]
    probs = out[OutputName.PROBS.value][b].astype(np.float64)
    return top[0] - sum(probs[c] for c, s in zip(ids, shares, strict=True) if s >= 0.01)


def with_rows(card: ModelCard, **changes) -> ModelCard:
    """The card with its 0.9 row's method (and class-conditional thresholds) replaced."""
    data = card.model_dump(mode="json")
    for row in data["calibration"]["prediction_sets"]["table"]:
        row["chosen"] = False
    chosen = {"coverage": 0.9, "mean_set_size": 1.0, "chosen": True, **changes}
    data["calibration"]["prediction_sets"]["table"].append(chosen)
    for coverage in (0.8, 0.95, 0.99):
        data["calibration"]["prediction_sets"]["table"].append(
            {**chosen, "coverage": coverage})
    return ModelCard.model_validate(data)


CARDS = {
    "shipped": SHIPPED,
    "aps": with_rows(SHIPPED, method="aps", thresholds=[0.9]),
    "raps": with_rows(SHIPPED, method="raps", penalty=0.05, k_reg=1, thresholds=[0.97]),
    "lac_wide": with_rows(SHIPPED, method="lac", thresholds=[0.995]),  # sets beyond top-k
    "raps_class_conditional": with_rows(
        SHIPPED, method="raps", penalty=0.1, k_reg=2, class_conditional=True,
        thresholds=[0.8, 0.95, None, 0.7, 0.9, 1.0, 0.85, 0.9, 0.6, 0.75]),
    "lac_class_conditional": with_rows(
        SHIPPED, method="lac", class_conditional=True,
        thresholds=[0.5, 0.9, 0.7, 0.3, 0.8, 0.6, 0.95, 0.4, None, 0.2]),
}


@pytest.mark.parametrize("name", list(CARDS))
@pytest.mark.parametrize("risk", [0.01, 0.02, 0.05, 0.1])
@pytest.mark.parametrize("batch", [1, 7, 64], ids=["1", "7", "64 (numpy path)"])
def test_sets_and_decisions_match_the_per_image_reference(
    name: str, risk: float, batch: int
) -> None:
    card = CARDS[name]
    table = DecisionTable.from_card(card)
    out = graph_outputs(card, batch=batch, seed=int(risk * 100) + batch)
    levels = table.levels(coverage=None, risk=risk)
    decided = table.decide(out, levels)
    row = card.calibration.prediction_sets.chosen(0.9)
    rule = card.calibration.abstention.at(risk)
    for b in range(batch):
        assert [m["class_id"] for m in decided.classes[b]] == reference_set(
            out[OutputName.PROBS.value][b], row)
        expected = (rule.threshold is not None
                    and reference_confidence(out, b, rule.score) >= rule.threshold)
        assert decided.accept[b] == expected
        estimate = card.calibration.accuracy_estimate
        assert decided.confident[b] == (
            reference_confidence(out, b, estimate.score) >= estimate.threshold)


def test_the_answer_carries_the_set_and_the_decision_in_the_contracts_shape() -> None:
    table = DecisionTable.from_card(SHIPPED)
    out = graph_outputs(SHIPPED, batch=5, seed=7)
    decided = table.decide(out, table.levels(coverage=0.95, risk=None))
    layouts = result_layouts(out, SHIPPED, top_k=3, decided=decided)
    results = build_results(out, SHIPPED, top_k=3, decided=decided)
    assert [r.model_dump(mode="json") for r in results] == layouts
    first = results[0]
    assert first.prediction_set.coverage == 0.95
    assert [(m.class_id, m.label) for m in first.prediction_set.classes] == [
        (m["class_id"], SHIPPED.labels[m["class_id"]]) for m in decided.classes[0]]
    rule = SHIPPED.calibration.abstention.at(0.05)
    assert first.decision.model_dump() == {"accept": decided.accept[0], "risk": 0.05,
                                           "delta": 0.1, "score": rule.score}


def test_an_uncalibrated_model_answers_without_sets_and_decisions() -> None:
    card = UNCALIBRATED
    assert DecisionTable.from_card(card) is None
    out = graph_outputs(card, batch=2, seed=1)
    layouts = result_layouts(out, card, top_k=2)
    assert all("prediction_set" not in r and "decision" not in r for r in layouts)
    assert answer_outputs(None) == ANSWER_OUTPUTS
    assert OutputName.PROBS.value not in ANSWER_OUTPUTS
    assert OutputName.PROBS.value in answer_outputs(DecisionTable.from_card(SHIPPED))
    support = decision_support(card)
    assert not support.available and "without labelled calibration images" in support.reason
    assert resolve_levels("m", None, coverage=None, risk=None) is None
    with pytest.raises(InvalidInput, match="cannot answer at a coverage or risk"):
        resolve_levels("m", None, coverage=0.9, risk=None)


def test_a_request_may_ask_only_for_levels_of_the_table() -> None:
    table = DecisionTable.from_card(SHIPPED)
    levels = table.levels(coverage=0.99, risk=0.01)
    assert (levels.sets.coverage, levels.accept.risk) == (0.99, 0.01)
    assert table.levels(coverage=None, risk=None) == table.defaults
    assert (table.defaults.sets.coverage, table.defaults.accept.risk) == (0.9, 0.05)
    with pytest.raises(InvalidInput, match="coverage 0.85 is not calibrated .* 0.8, 0.9, 0.95"):
        table.levels(coverage=0.85, risk=None)
    with pytest.raises(InvalidInput, match="risk 0.03 is not calibrated"):
        table.levels(coverage=None, risk=0.03)


def test_the_model_info_states_the_calibration() -> None:
    support = decision_support(SHIPPED)
    calibration = SHIPPED.calibration
    assert support.available
    assert support.coverages == [0.8, 0.9, 0.95, 0.99] and support.default_coverage == 0.9
    assert support.risks == [0.01, 0.02, 0.05, 0.1] and support.default_risk == 0.05
    assert support.label_source == calibration.label_source == "noisy"
    assert f"{calibration.images} noisy-label images ({calibration.source})" in support.reason
    assert support.calibrated_accuracy == calibration.accuracy_estimate.accuracy


def test_a_rule_without_threshold_accepts_nothing_and_a_null_threshold_keeps_every_class():
    data = SHIPPED.model_dump(mode="json")
    for level in data["calibration"]["abstention"]["levels"]:
        level["threshold"] = None
    for row in data["calibration"]["prediction_sets"]["table"]:
        row["thresholds"] = [None] * len(row["thresholds"])
    card = ModelCard.model_validate(data)
    table = DecisionTable.from_card(card)
    out = graph_outputs(card, batch=4, seed=3)
    decided = table.decide(out, table.defaults)
    assert decided.accept == [False] * 4
    assert all(len(classes) == card.num_classes for classes in decided.classes)


@pytest.mark.parametrize("score", list(CONFIDENCE_SCORES))
@pytest.mark.parametrize("batch", [3, 64])
def test_every_confidence_score_decides_like_the_reference(score: str, batch: int) -> None:
    out = graph_outputs(SHIPPED, batch=batch, seed=11)
    values = [reference_confidence(out, b, score) for b in range(batch)]
    data = SHIPPED.model_dump(mode="json")
    for level in data["calibration"]["abstention"]["levels"]:
        level["score"], level["threshold"] = score, float(np.median(values))
    data["calibration"]["accuracy_estimate"].update(score=score,
                                                    threshold=float(np.median(values)))
    table = DecisionTable.from_card(ModelCard.model_validate(data))
    decided = table.decide(out, table.defaults)
    expected = [value >= float(np.median(values)) for value in values]
    assert decided.accept == expected and decided.confident == expected
