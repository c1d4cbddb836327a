"""The model card's calibration section: thresholds that turn a model's outputs into decisions
with stated guarantees, computed by the exporter on labelled held-out images
(``hetexport.calibration``) and applied by the gateway to every answer.

Three decisions, each at levels a request may choose from:

* **prediction sets** (split conformal, Vovk et al. 2005): at coverage ``1 - alpha`` the set
  ``{y : s(x, y) <= q}`` of an image drawn like the calibration images holds its label with
  probability at least ``1 - alpha`` (over the image and the calibration draw), where ``s`` is
  a non-conformity score (``hetcontract.decision_scores``) and ``q`` the
  ``ceil((n + 1)(1 - alpha))``-th smallest of the ``n`` calibration scores; class-conditional
  thresholds ``q_y`` (from the images labelled y) give that coverage within every class;
* **abstention** (selective prediction): accept an answer when its confidence score is at
  least the threshold; with probability at least ``1 - delta`` over the calibration draw, the
  top-1 error among accepted images is at most ``risk`` (Learn-then-Test, Angelopoulos et al.
  2021, with binomial p-values, or SGR, Geifman and El-Yaniv 2017);
* **accuracy without labels** (ATC, Garg et al., ICLR 2022): the share of images whose score
  is at least ``threshold`` estimates the top-1 accuracy; on the calibration images it equals
  their ``accuracy``.

All guarantees are about the labels the calibration images carry: ``label_source`` says
whether they were noisy (what a user usually has) or clean.

A threshold of ``None`` (JSON null) is infinite: a prediction set holding every class, or an
abstention rule that accepts nothing (too few calibration images for the level asked).
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

SetMethod = Literal["lac", "aps", "raps"]
ConfidenceScoreName = Literal[
    "max_probability",
    "margin",
    "top_ratio",
    "negative_entropy",
    "negative_expected_entropy",
    "negative_mutual_information",
    "confusable_margin",
]
LabelSource = Literal["noisy", "clean", "unknown"]
AbstentionProcedure = Literal["ltt", "sgr"]

DEFAULT_COVERAGES: tuple[float, ...] = (0.80, 0.90, 0.95, 0.99)
DEFAULT_COVERAGE = 0.90
DEFAULT_RISKS: tuple[float, ...] = (0.01, 0.02, 0.05, 0.10)
DEFAULT_RISK = 0.05
DEFAULT_DELTA = 0.1


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True)


class SetThresholds(_Frozen):
    """One method's split-conformal threshold(s) at one ``coverage``.

    ``thresholds`` holds one value (marginal) or one per class (``class_conditional``);
    ``penalty`` and ``k_reg`` are RAPS's; ``mean_set_size`` is measured on the tuning images
    the method was chosen on; ``chosen`` marks the method served at this coverage.
    """

    coverage: float = Field(gt=0, lt=1)
    method: SetMethod
    class_conditional: bool = False
    penalty: float = Field(default=0.0, ge=0)
    k_reg: int = Field(default=0, ge=0)
    thresholds: list[float | None] = Field(min_length=1)
    mean_set_size: float = Field(ge=0)
    chosen: bool = False


class PredictionSets(_Frozen):
    """Every method's thresholds at every coverage (``table``), one of them ``chosen`` per
    coverage; answers carry the set at ``default_coverage`` unless a request asks for
    another of ``coverages``."""

    default_coverage: float
    table: list[SetThresholds] = Field(min_length=1)

    @property
    def coverages(self) -> list[float]:
        """The coverage levels offered, ascending."""
        return sorted({row.coverage for row in self.table})

    def chosen(self, coverage: float) -> SetThresholds:
        """The method served at ``coverage``; KeyError when it is not offered."""
        for row in self.table:
            if row.chosen and row.coverage == coverage:
                return row
        raise KeyError(coverage)

    @model_validator(mode="after")
    def _one_chosen_per_coverage(self) -> PredictionSets:
        for coverage in self.coverages:
            count = sum(row.chosen for row in self.table if row.coverage == coverage)
            if count != 1:
                raise ValueError(f"coverage {coverage}: {count} chosen methods, expected 1")
        if self.default_coverage not in self.coverages:
            raise ValueError(f"default_coverage {self.default_coverage} is not a calibrated "
                             f"coverage {self.coverages}")
        return self


class RiskThreshold(_Frozen):
    """Accept an answer when ``score`` is at least ``threshold`` (None: accept nothing); then
    the error among accepted images is at most ``risk`` with probability at least
    ``1 - delta``. On the calibration images this rule accepted ``accepted_fraction`` with
    ``empirical_risk`` error among them (None when it accepted none), and ``risk_bound`` is
    the ``1 - delta`` Clopper-Pearson upper bound of that error."""

    risk: float = Field(gt=0, lt=1)
    score: ConfidenceScoreName
    threshold: float | None
    accepted_fraction: float = Field(ge=0, le=1)
    empirical_risk: float | None = Field(default=None, ge=0, le=1)
    risk_bound: float = Field(ge=0, le=1)


class Abstention(_Frozen):
    """Thresholds for accept-or-review at each ``risk`` (``levels``), found by ``procedure``
    at confidence ``1 - delta`` among the ``candidates`` scores (the score chosen per risk on
    the tuning images)."""

    procedure: AbstentionProcedure
    delta: float = Field(gt=0, lt=1)
    default_risk: float
    candidates: list[ConfidenceScoreName] = Field(min_length=1)
    levels: list[RiskThreshold] = Field(min_length=1)

    @property
    def risks(self) -> list[float]:
        """The risk levels offered, ascending."""
        return sorted(level.risk for level in self.levels)

    def at(self, risk: float) -> RiskThreshold:
        """The rule for ``risk``; KeyError when it is not offered."""
        for level in self.levels:
            if level.risk == risk:
                return level
        raise KeyError(risk)

    @model_validator(mode="after")
    def _levels_unique(self) -> Abstention:
        if len(set(self.risks)) != len(self.levels):
            raise ValueError("each risk level appears once")
        if self.default_risk not in self.risks:
            raise ValueError(f"default_risk {self.default_risk} is not a calibrated risk "
                             f"{self.risks}")
        return self


class AccuracyEstimate(_Frozen):
    """ATC: the share of images with ``score`` at least ``threshold`` estimates the top-1
    accuracy; ``accuracy`` is the calibration images' (the figure a falling estimate is
    compared with)."""

    method: Literal["atc"] = "atc"
    score: ConfidenceScoreName
    threshold: float | None
    accuracy: float = Field(ge=0, le=1)


class Calibration(_Frozen):
    """Where the thresholds came from and the thresholds themselves.

    ``images`` labelled images were used: ``tuning_images`` of them (a seeded random part)
    chose each method, score and RAPS parameter and the order Learn-then-Test tests its
    thresholds in; the other ``images - tuning_images`` computed the thresholds, so the
    guarantees hold without a correction for those choices. ``date`` is ISO 8601 (UTC).
    """

    date: str
    label_source: LabelSource
    source: str = ""
    images: int = Field(ge=1)
    tuning_images: int = Field(ge=0)
    seed: int = 0
    prediction_sets: PredictionSets
    abstention: Abstention
    accuracy_estimate: AccuracyEstimate

    @property
    def calibration_images(self) -> int:
        """Images the thresholds were computed on."""
        return self.images - self.tuning_images

    def check_classes(self, num_classes: int) -> None:
        """ValueError unless every class-conditional row has ``num_classes`` thresholds and
        every marginal row one."""
        for row in self.prediction_sets.table:
            expected = num_classes if row.class_conditional else 1
            if len(row.thresholds) != expected:
                raise ValueError(
                    f"{row.method} at coverage {row.coverage}: {len(row.thresholds)} "
                    f"thresholds, expected {expected}"
                )
