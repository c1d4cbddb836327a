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
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import numpy as np
from hetcontract import Calibration, DecisionSupport, ModelCard, OutputName
from hetcontract.decision_scores import (
    CONFIDENCE_OUTPUTS,
    SMALLEST_PROBABILITY,
    confidence,
    set_scores,
    threshold_array,
)

from hetgateway.errors import InvalidInput

_PROBS = OutputName.PROBS.value
_TOPK_IDS = OutputName.TOPK_IDS.value
_TOPK_PROBS = OutputName.TOPK_PROBS.value
SMALL_BATCH_VALUES = 512
"""Batches of at most this many probabilities (B x K) under a marginal rule are decided in
plain Python on the outputs' ``tolist()``: there numpy's per-call overhead (some fifteen calls)
costs several times the arithmetic. Both paths compute the same IEEE double operations in the
same order as ``hetcontract.decision_scores``, so they agree bit for bit (tests hold them to a
per-image reference)."""
NEGATED_OUTPUTS = {
    "negative_entropy": OutputName.PREDICTIVE_ENTROPY.value,
    "negative_expected_entropy": OutputName.EXPECTED_ENTROPY.value,
    "negative_mutual_information": OutputName.MUTUAL_INFORMATION.value,
}
NOT_CALIBRATED = (
    "exported without labelled calibration images, so answers carry no prediction_set and "
    "no decision; calibrate it with 'hetexport calibrate <model dir> --images <labelled "
    "images>' (or export with --calibration-images)"
)


@dataclass(frozen=True)
class SetRule:
    """The served prediction set at one coverage: method, RAPS parameters, thresholds (one,
    or one per class; infinite where the card says null).

    A marginal rule's set is always a run of the most probable classes: the LAC score
    ``1 - p`` and the (R)APS score (mass ranked at or above a class, plus a penalty growing
    with the rank) never decrease down the ranking, so one threshold keeps a prefix. Its size
    is then counted without ranking every class (``sizes``), and the graph's own top-k ids
    (ranked by the same probabilities) list it."""

    coverage: float
    method: str
    penalty: float
    k_reg: int
    thresholds: np.ndarray

    @property
    def prefix(self) -> bool:
        return self.thresholds.size == 1

    def sizes(self, probs: np.ndarray) -> np.ndarray:
        """Set size per input [B] of a marginal rule, from float64 probabilities [B, K]:
        the number of classes whose ``set_scores`` is at most the threshold."""
        if self.method == "lac":
            return (1.0 - probs <= self.thresholds).sum(axis=1)
        mass = np.cumsum(np.sort(probs, axis=1)[:, ::-1], axis=1)  # = set_scores, ranked
        if self.method == "raps" and self.penalty:
            ranks = np.arange(1, probs.shape[1] + 1)
            mass += self.penalty * np.maximum(ranks - self.k_reg, 0)
        return (mass <= self.thresholds).sum(axis=1)


@dataclass(frozen=True)
class AcceptRule:
    """Accept when ``score`` is at least ``threshold`` (infinite: accept nothing); the
    decision layouts for both outcomes are built once."""

    risk: float
    delta: float
    score: str
    threshold: float
    layouts: tuple[dict[str, Any], ...] = field(init=False, repr=False, compare=False)
    """``Decision``'s layout for a refusal and for an acceptance (index by the bool)."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "layouts", tuple(
            {"accept": accept, "risk": self.risk, "delta": self.delta, "score": self.score}
            for accept in (False, True)))


class Levels(NamedTuple):
    """The set and the abstention rule one request is answered with."""

    sets: SetRule
    accept: AcceptRule


class Decided(NamedTuple):
    """One batch's decisions: per input the set's classes (``SetMember`` layouts, most
    probable first), accept or not (``Decision`` layouts), and whether the ATC score is at
    least its threshold."""

    levels: Levels
    classes: list[list[dict[str, Any]]]
    decisions: list[dict[str, Any]]
    confident: list[bool]

    @property
    def accept(self) -> list[bool]:
        return [decision["accept"] for decision in self.decisions]


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
        names = {OutputName.PROBS.value, OutputName.TOPK_IDS.value}
        for score in {rule.score for rule in self._accept.values()} | {estimate.score}:
            names.update(CONFIDENCE_OUTPUTS[score])
        self._output_names = tuple(sorted(names))

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
        rule, accept = levels.sets, levels.accept
        if rule.prefix and outputs[_PROBS].size <= SMALL_BATCH_VALUES:
            return self._decide_small(outputs, levels)
        probs = np.asarray(outputs[_PROBS], dtype=np.float64)
        member = self.set_members
        if rule.prefix:
            sizes = rule.sizes(probs).tolist()
            ranked = _ranked(outputs, probs, max(sizes))
            classes = [[member[c] for c in row[:size]]
                       for row, size in zip(ranked, sizes, strict=True)]
        else:
            classes = self._class_conditional(probs, rule)
        layouts = accept.layouts
        decisions = [layouts[ok] for ok in (
            confidence(outputs, accept.score) >= accept.threshold).tolist()]
        confident = confidence(outputs, self.accuracy_score) >= self.accuracy_threshold
        return Decided(levels, classes, decisions, confident.tolist())

    def _decide_small(self, outputs: Mapping[str, np.ndarray], levels: Levels) -> Decided:
        """``decide`` for a small batch under a marginal rule, in plain Python: a set is a
        run of the most probable classes, so it is counted down the graph's top-k
        probabilities (already ranked) and only a set reaching past them ranks every class."""
        rule, accept = levels.sets, levels.accept
        member, threshold = self.set_members, float(rule.thresholds[0])
        top = outputs[_TOPK_PROBS].tolist()
        lac = rule.method == "lac"
        classes = []
        for b, (top_row, ranked) in enumerate(zip(top, outputs[_TOPK_IDS].tolist(),
                                                  strict=True)):
            if lac:  # _set_size's LAC loop, inlined: the common case
                size = len(top_row)
                for index, value in enumerate(top_row):
                    if 1.0 - value > threshold:
                        size = index
                        break
            else:
                size = _set_size(top_row, rule, threshold)
            if size == len(top_row):  # it may reach past the top k: count over every class
                row = outputs[_PROBS][b].tolist()
                size = _set_size(sorted(row, reverse=True), rule, threshold)
                if size > len(ranked):
                    ranked = sorted(range(len(row)), key=lambda c, p=row: (-p[c], c))
            classes.append([member[c] for c in ranked[:size]])
        layouts, bound = accept.layouts, accept.threshold
        decisions = [layouts[value >= bound] for value in _scores(outputs, accept.score, top)]
        confident = [value >= self.accuracy_threshold
                     for value in _scores(outputs, self.accuracy_score, top)]
        return Decided(levels, classes, decisions, confident)

    def _class_conditional(self, probs: np.ndarray, rule: SetRule) -> list[list[dict]]:
        """Sets under one threshold per class: members anywhere in the ranking."""
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
        return classes

    def output_names(self) -> tuple[str, ...]:
        """The graph outputs decisions read: the full probabilities, the top-k ids and
        whatever the card's confidence scores need."""
        return self._output_names


def _set_size(ranked: list[float], rule: SetRule, threshold: float) -> int:
    """How many of the probabilities ``ranked`` (decreasing) belong to a marginal rule's set:
    the run whose score stays at most the threshold (``SetRule.sizes`` in Python floats, IEEE
    doubles, the same operations in the same order)."""
    if rule.method == "lac":
        for index, value in enumerate(ranked):
            if 1.0 - value > threshold:
                return index
        return len(ranked)
    size, mass = 0, 0.0
    penalised = rule.method == "raps" and rule.penalty
    for rank, value in enumerate(ranked, start=1):
        mass += value
        score = mass + rule.penalty * max(rank - rule.k_reg, 0) if penalised else mass
        if score > threshold:
            break
        size += 1
    return size


def _scores(outputs: Mapping[str, np.ndarray], score: str, top: list[list[float]]
            ) -> list[float]:
    """``hetcontract.decision_scores.confidence`` as Python floats, computed in Python for the
    scores read from the top-k probabilities ``top`` (``tolist()``) or one output, through
    numpy for the others."""
    negated = NEGATED_OUTPUTS.get(score)
    if negated is not None:
        return [-value for value in outputs[negated].reshape(-1).tolist()]
    if score == "max_probability":
        return [row[0] for row in top]
    if score not in ("margin", "top_ratio") or len(top[0]) == 1:
        return confidence(outputs, score).tolist()
    if score == "margin":
        return [row[0] - row[1] for row in top]
    return [row[0] / max(row[1], SMALLEST_PROBABILITY) for row in top]


def _ranked(outputs: Mapping[str, np.ndarray], probs: np.ndarray, count: int) -> list[list[int]]:
    """The ``count`` most probable class ids of each input, most probable first: the graph's
    top-k ids when ``count`` is within them (ranked by the same ``probs``), else a stable
    argsort (ties by class id, as ``hetcontract.decision_scores`` ranks)."""
    top = outputs[_TOPK_IDS]
    if count <= top.shape[1]:
        return top[:, :count].tolist()
    return np.argsort(-probs, axis=1, kind="stable")[:, :count].tolist()


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
