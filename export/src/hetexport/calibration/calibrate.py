"""One calibration: labelled held-out images' graph outputs in, the model card's
``calibration`` section out.

Typical usage::

    outputs = graph_outputs(Path("model_repo/fashion_het/1/model.onnx"), images)
    section = calibrate(outputs, labels, heteroscedastic=True, label_source="noisy")
    card = card.model_copy(update={"calibration": section})  # recalibrate.py writes it

The images are split at random (seeded) into a tuning part (``tuning_fraction``) and a
calibration part. Every choice is made on the tuning part: the conformal method served at each
coverage and RAPS's parameters (``conformal.calibrate_sets``), the confidence score used at
each risk (the one Learn-then-Test accepts the most tuning images with; ties: the lower area
under the risk-coverage curve) and Learn-then-Test's grid and starting point. The thresholds
are computed on the calibration part alone, so every guarantee holds as stated, with no
correction for those choices. The ATC threshold and the accuracy it is compared with use all
images (ATC states no guarantee).

The outputs are the exported graph's own (the numbers Triton serves), so a threshold applies
to exactly the scores the gateway computes (``hetcontract.decision_scores``).
"""

from __future__ import annotations

import datetime as dt
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from hetcontract import OutputName
from hetcontract.calibration import (
    DEFAULT_COVERAGE,
    DEFAULT_COVERAGES,
    DEFAULT_DELTA,
    DEFAULT_RISK,
    DEFAULT_RISKS,
    Abstention,
    AbstentionProcedure,
    AccuracyEstimate,
    Calibration,
    LabelSource,
    RiskThreshold,
)
from hetcontract.decision_scores import CONFIDENCE_SCORES, PLAIN_CONFIDENCE_SCORES, confidence

from hetexport.calibration.atc import atc_threshold
from hetexport.calibration.conformal import calibrate_sets
from hetexport.calibration.selective import (
    Rule,
    area_under_risk_coverage,
    ltt_threshold,
    sgr_threshold,
)

DEFAULT_TUNING_FRACTION = 0.3
"""Share of the labelled images that makes the choices (the rest computes thresholds)."""
DEFAULT_ACCURACY_SCORE = "top_ratio"
"""ATC's confidence: how many times likelier the top class is than the runner-up (the
log-probability margin, without the logarithm). Garg et al. use the max probability (ATC-MC)
or the negative entropy (ATC-NE); on the demo models both fall far below the true accuracy
under blur and low contrast, which soften the probabilities while the top class stays right,
and the margin tracks it better (``bench/decisions.py`` reports all
three; it is where this default was chosen, so its shift figures for it are not an
independent test)."""
GRAPH_BATCH = 256


@dataclass(frozen=True, kw_only=True)
class CalibrationConfig:
    """The levels calibrated, the defaults an answer uses, and how."""

    coverages: tuple[float, ...] = DEFAULT_COVERAGES
    default_coverage: float = DEFAULT_COVERAGE
    risks: tuple[float, ...] = DEFAULT_RISKS
    default_risk: float = DEFAULT_RISK
    delta: float = DEFAULT_DELTA
    tuning_fraction: float = DEFAULT_TUNING_FRACTION
    seed: int = 0
    procedure: AbstentionProcedure = "ltt"
    accuracy_score: str = DEFAULT_ACCURACY_SCORE

    def __post_init__(self) -> None:
        if self.default_coverage not in self.coverages:
            raise ValueError(f"default coverage {self.default_coverage} not in {self.coverages}")
        if self.default_risk not in self.risks:
            raise ValueError(f"default risk {self.default_risk} not in {self.risks}")
        if not 0.0 < self.tuning_fraction < 1.0:
            raise ValueError(f"tuning_fraction must be in (0, 1), got {self.tuning_fraction}")
        for level in (*self.coverages, *self.risks, self.delta):
            if not 0.0 < level < 1.0:
                raise ValueError(f"levels must lie in (0, 1), got {level}")


def tuning_split(count: int, *, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Disjoint sorted index arrays (tuning, calibration): a seeded random ``fraction`` of
    ``count`` images (at least 1) for tuning, the rest (at least 1) for calibration."""
    if count < 2:
        raise ValueError(f"calibration needs at least 2 labelled images, got {count}")
    order = np.random.default_rng(seed).permutation(count)
    tuning = min(max(1, round(fraction * count)), count - 1)
    return np.sort(order[:tuning]), np.sort(order[tuning:])


def confidence_candidates(heteroscedastic: bool) -> tuple[str, ...]:
    """The confidence scores abstention chooses among: all for a HET head, those that use
    only p_bar for a deterministic head (the others degenerate there)."""
    return CONFIDENCE_SCORES if heteroscedastic else PLAIN_CONFIDENCE_SCORES


SOURCE_DATE_EPOCH = "SOURCE_DATE_EPOCH"
"""The reproducible-builds variable (https://reproducible-builds.org/specs/source-date-epoch/):
seconds since the epoch to write as the calibration's date instead of the clock's."""


def calibration_date() -> str:
    """The date a calibration records (ISO 8601, UTC, whole seconds): ``SOURCE_DATE_EPOCH``
    where it is set, so that a rebuild can write the same bytes as the build it repeats;
    else now."""
    epoch = os.environ.get(SOURCE_DATE_EPOCH)
    moment = (dt.datetime.fromtimestamp(int(epoch), dt.UTC) if epoch
              else dt.datetime.now(dt.UTC))
    return moment.replace(microsecond=0).isoformat()


def calibrate(
    outputs: Mapping[str, np.ndarray],
    labels: np.ndarray,
    *,
    heteroscedastic: bool,
    label_source: LabelSource,
    source: str = "",
    config: CalibrationConfig = CalibrationConfig(),
    date: str | None = None,
) -> Calibration:
    """The card's calibration section from the graph's ``outputs`` on labelled images
    (batch first) and their ``labels`` [N] (module doc)."""
    labels = np.asarray(labels, dtype=np.int64).reshape(-1)
    probs = np.asarray(outputs[OutputName.PROBS.value], dtype=np.float64)
    if probs.shape[0] != len(labels):
        raise ValueError(f"{probs.shape[0]} outputs for {len(labels)} labels")
    tune, cal = tuning_split(len(labels), fraction=config.tuning_fraction, seed=config.seed)
    wrong = np.asarray(outputs[OutputName.TOPK_IDS.value]).reshape(len(labels), -1)[:, 0] != labels
    sets = calibrate_sets((probs[tune], labels[tune]), (probs[cal], labels[cal]),
                          coverages=config.coverages, default_coverage=config.default_coverage)
    candidates = confidence_candidates(heteroscedastic)
    scores = {name: confidence(outputs, name) for name in candidates}
    levels = [
        _risk_level(scores, wrong, tune, cal, risk=risk, config=config)
        for risk in config.risks
    ]
    accuracy_scores = confidence(outputs, config.accuracy_score)
    return Calibration(
        date=date or calibration_date(),
        label_source=label_source,
        source=source,
        images=len(labels),
        tuning_images=len(tune),
        seed=config.seed,
        prediction_sets=sets,
        abstention=Abstention(procedure=config.procedure, delta=config.delta,
                              default_risk=config.default_risk, candidates=list(candidates),
                              levels=levels),
        accuracy_estimate=AccuracyEstimate(
            score=config.accuracy_score,
            threshold=atc_threshold(accuracy_scores, ~wrong),
            accuracy=float(np.mean(~wrong)),
        ),
    )


def _risk_level(scores: Mapping[str, np.ndarray], wrong: np.ndarray, tune: np.ndarray,
                cal: np.ndarray, *, risk: float, config: CalibrationConfig) -> RiskThreshold:
    """The score chosen on the tuning part and its rule from the calibration part."""
    score = choose_confidence_score(
        {name: (values[tune], wrong[tune]) for name, values in scores.items()},
        risk=risk, delta=config.delta)
    tuning = (scores[score][tune], wrong[tune])
    calibration = (scores[score][cal], wrong[cal])
    if config.procedure == "sgr":
        rule = sgr_threshold(calibration, risk=risk, delta=config.delta)
    else:
        rule = ltt_threshold(tuning=tuning, calibration=calibration, risk=risk,
                             delta=config.delta)
    return _risk_threshold(rule, risk=risk, score=score, total=len(cal))


def choose_confidence_score(tuning: Mapping[str, tuple[np.ndarray, np.ndarray]], *,
                            risk: float, delta: float) -> str:
    """The score whose Learn-then-Test rule, fitted and tested on the tuning images alone,
    accepts the most of them (ties: the lower AURC there, then the first named)."""
    def merit(name: str) -> tuple[int, float]:
        rule = ltt_threshold(tuning=tuning[name], calibration=tuning[name], risk=risk,
                             delta=delta)
        return (-rule.accepted, area_under_risk_coverage(*tuning[name]))

    return min(tuning, key=merit)


def _risk_threshold(rule: Rule, *, risk: float, score: str, total: int) -> RiskThreshold:
    return RiskThreshold(
        risk=risk, score=score, threshold=rule.threshold,
        accepted_fraction=rule.accepted_fraction(total), empirical_risk=rule.empirical_risk,
        risk_bound=rule.bound,
    )


@dataclass(frozen=True, kw_only=True)
class CalibrationSet:
    """Labelled held-out images an export calibrates on: normalised float32 ``images``
    [N, C, H, W], the model's class ids ``labels`` [N], whether those labels are noisy or
    clean, and a line saying where they came from."""

    images: np.ndarray
    labels: np.ndarray
    label_source: LabelSource
    source: str = ""
    config: CalibrationConfig = CalibrationConfig()


def calibrate_graph(onnx_model: bytes | Path, held_out: CalibrationSet, *,
                    heteroscedastic: bool) -> Calibration:
    """``calibrate`` on the outputs of the exported graph ``onnx_model`` (bytes or a path)."""
    outputs = graph_outputs(onnx_model, np.asarray(held_out.images, dtype=np.float32))
    return calibrate(outputs, held_out.labels, heteroscedastic=heteroscedastic,
                     label_source=held_out.label_source, source=held_out.source,
                     config=held_out.config)


def graph_outputs(onnx_model: bytes | Path, images: np.ndarray, *,
                  batch_size: int = GRAPH_BATCH) -> dict[str, np.ndarray]:
    """Every output of the exported graph (ONNX Runtime, CPU) on float32 ``images``
    [N, C, H, W], already normalised, in batches."""
    from hetexport.onnx.runner import OnnxRunner

    runner = OnnxRunner(onnx_model, intra_op_threads=0)
    images = np.asarray(images, dtype=np.float32)
    parts = [runner.run(images[start:start + batch_size])
             for start in range(0, len(images), batch_size)]
    return {name: np.concatenate([part[name] for part in parts]) for name in parts[0]}


