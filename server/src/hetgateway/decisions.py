"""Decisions on every answer of a calibrated model: its prediction set, accept-or-review, and
whether it counts toward the label-free accuracy estimate.

Typical usage::

    table = DecisionTable.from_card(card)                 # None: exported without calibration
    levels = table.levels(coverage=None, risk=0.02)        # the card's defaults, or asked ones
    decided = table.decide(outputs, levels)                # one batch of Triton's outputs
    decided.classes[b]      # input b's set: [{"class_id", "label"}], most probable first
    decided.accept[b]       # its decision
    decided.confident[b]    # ATC: its score is at least the card's threshold

The thresholds and scores are the card's (``hetcontract.Calibration``); the scores are computed
by ``hetcontract.decision_scores``, the code the exporter calibrated them with, vectorised over
the batch. A table is built once per catalog entry; deciding a batch costs a few numpy calls.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np
from hetcontract import Calibration, DecisionSupport, ModelCard, OutputName
from hetcontract.decision_scores import (
    CONFIDENCE_OUTPUTS,
    confidence,
    set_scores,
    threshold_array,
)

from hetgateway.errors import InvalidInput

NOT_CALIBRATED = (
    "exported without labelled calibration images, so answers carry no prediction_set and "
    "no decision; calibrate it with 'hetexport calibrate <model dir> --images <labelled "
    "images>' (or export with --calibration-images)"
)


@dataclass(frozen=True)
class SetRule:
    """The served prediction set at one coverage: method, RAPS parameters, thresholds (one,
    or one per class; infinite where the card says null)."""

    coverage: float
    method: str
    penalty: float
    k_reg: int
    thresholds: np.ndarray


@dataclass(frozen=True)
class AcceptRule:
    """Accept when ``score`` is at least ``threshold`` (infinite: accept nothing)."""

    risk: float
    delta: float
    score: str
    threshold: float


class Levels(NamedTuple):
    """The set and the abstention rule one request is answered with."""

    sets: SetRule
    accept: AcceptRule


class Decided(NamedTuple):
    """One batch's decisions: per input the set's classes (``SetMember`` layouts, most
    probable first), accept or not, and whether the ATC score is at least its threshold."""

    levels: Levels
    classes: list[list[dict[str, Any]]]
    accept: list[bool]
    confident: list[bool]


class DecisionTable:
    """A calibrated card's thresholds, ready to apply to batches of outputs."""

    def __init__(self, calibration: Calibration, labels: Sequence[str]) -> None:
        sets, abstention = calibration.prediction_sets, calibration.abstention
        self.calibration = calibration
        self.set_members: tuple[dict[str, Any], ...] = tuple(
            {"class_id": class_id, "label": label} for class_id, label in enumerate(labels))
        """Each class as a prediction set lists it (``SetMember``'s layout), built once."""
        self.coverages: tuple[float, ...] = tuple(sets.coverages)
        self.risks: tuple[float, ...] = tuple(abstention.risks)
        self._sets = {c: _set_rule(sets.chosen(c).model_dump(), c) for c in self.coverages}
        self._accept = {
            level.risk: AcceptRule(level.risk, abstention.delta, level.score,
                                   np.inf if level.threshold is None else level.threshold)
            for level in abstention.levels
        }
        self.defaults = Levels(self._sets[sets.default_coverage],
                               self._accept[abstention.default_risk])
        estimate = calibration.accuracy_estimate
        self.accuracy_score = estimate.score
        self.accuracy_threshold = np.inf if estimate.threshold is None else estimate.threshold
        self.calibrated_accuracy = estimate.accuracy

    @classmethod
    def from_card(cls, card: ModelCard) -> DecisionTable | None:
        return None if card.calibration is None else cls(card.calibration, card.labels)

    def levels(self, *, coverage: float | None, risk: float | None) -> Levels:
        """The rules for the coverage and risk asked for (None: the card's default);
        ``InvalidInput`` for a level the card does not offer."""
        if coverage is None and risk is None:
            return self.defaults
        return Levels(
            self.defaults.sets if coverage is None else _pick(self._sets, coverage, "coverage"),
            self.defaults.accept if risk is None else _pick(self._accept, risk, "risk"),
        )

    def decide(self, outputs: Mapping[str, np.ndarray], levels: Levels) -> Decided:
        """Sets, decisions and ATC flags of one batch (batch first, as Triton returns)."""
        rule = levels.sets
        probs = np.asarray(outputs[OutputName.PROBS.value], dtype=np.float64)
        order = np.argsort(-probs, axis=1, kind="stable")
        inside = set_scores(probs, rule.method, penalty=rule.penalty, k_reg=rule.k_reg) <= (
            rule.thresholds)
        ranked_inside = np.take_along_axis(inside, order, axis=1)
        member = self.set_members
        flat = [member[c] for c in order[ranked_inside].tolist()]  # row after row, ranked
        classes, start = [], 0
        for count in ranked_inside.sum(axis=1).tolist():
            classes.append(flat[start:start + count])
            start += count
        accept = (confidence(outputs, levels.accept.score) >= levels.accept.threshold).tolist()
        confident = confidence(outputs, self.accuracy_score) >= self.accuracy_threshold
        return Decided(levels, classes, accept, confident.tolist())

    def output_names(self) -> tuple[str, ...]:
        """The graph outputs decisions read: the full probabilities and whatever the card's
        confidence scores need."""
        scores = {rule.score for rule in self._accept.values()} | {self.accuracy_score}
        names = {OutputName.PROBS.value}
        for score in scores:
            names.update(CONFIDENCE_OUTPUTS[score])
        return tuple(sorted(names))


def resolve_levels(model: str, table: DecisionTable | None, *, coverage: float | None,
                   risk: float | None) -> Levels | None:
    """The levels a request is answered at: None for an uncalibrated model (which refuses a
    request naming a coverage or a risk with ``InvalidInput``), else ``table.levels``."""
    if table is None:
        if coverage is not None or risk is not None:
            raise InvalidInput(f"model {model!r} cannot answer at a coverage or risk: it was "
                               f"{NOT_CALIBRATED}")
        return None
    return table.levels(coverage=coverage, risk=risk)


def decision_support(card: ModelCard) -> DecisionSupport:
    """What a model's answers carry, for its model info; why nothing when uncalibrated."""
    calibration = card.calibration
    if calibration is None:
        return DecisionSupport(available=False, reason=f"model {card.name!r} was "
                                                       f"{NOT_CALIBRATED}")
    sets, abstention = calibration.prediction_sets, calibration.abstention
    return DecisionSupport(
        available=True,
        reason=(f"calibrated on {calibration.images} {calibration.label_source}-label images "
                f"({calibration.source or 'source not stated'}) on {calibration.date}; the "
                f"guarantees hold for labels like those"),
        coverages=sets.coverages, default_coverage=sets.default_coverage,
        risks=abstention.risks, default_risk=abstention.default_risk, delta=abstention.delta,
        label_source=calibration.label_source,
        estimated_accuracy_score=calibration.accuracy_estimate.score,
        calibrated_accuracy=calibration.accuracy_estimate.accuracy,
    )


def _set_rule(row: dict[str, Any], coverage: float) -> SetRule:
    return SetRule(coverage, row["method"], row["penalty"], row["k_reg"],
                   threshold_array(row["thresholds"]))


def _pick(rules: Mapping[float, Any], level: float, what: str) -> Any:
    rule = rules.get(level)
    if rule is None:
        offered = ", ".join(f"{value:g}" for value in sorted(rules))
        raise InvalidInput(f"{what} {level:g} is not calibrated for this model; choose one of "
                           f"{offered}")
    return rule
