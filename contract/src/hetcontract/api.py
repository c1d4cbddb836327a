"""The gateway's HTTP API schema: requests, answers and errors (see ARCHITECTURE.md).

The gateway builds its answers from these models and the SDK parses them with the same
models, so the two cannot drift apart.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SerializerFunctionWrapHandler,
    model_serializer,
)

MAX_TOP_K_DEFAULT = 5

API_VERSION = 2
"""Version of this schema. 2: ``confusable`` lists where each top class's probability moves
(``confused_with[].share``), no longer latent correlations (``correlated[].correlation``), and
``class_correlation`` is named ``latent_correlation``. Within version 2, answers of calibrated
models gained ``prediction_set`` and ``decision`` and requests ``coverage`` and ``risk``
(optional fields: older clients and answers still parse)."""

MIN_CONFUSABLE_SHARE = 0.01
"""A class that takes less than 1 % of a top class's probability movement is not listed."""


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True)


# ---- requests -------------------------------------------------------------------------------


class ImageInput(_Frozen):
    """One encoded image (PNG, JPEG, GIF, BMP, WebP), base64."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    image: str = Field(description="base64-encoded image file")


class TensorInput(_Frozen):
    """One preprocessed tensor, [C, H, W] or [H, W] for one channel, already normalised."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    tensor: list[Any] = Field(description="nested list of floats, [C, H, W] or [H, W]")


ExtraOutput = Literal["probs", "latent_probs"]
"""A per-class vector a request may ask for beyond the default answer (``include``):
``probs`` the full MC-averaged p_bar over all K classes, ``latent_probs`` the noise-free
``link(mu / tau)`` of the latent mean (``hetcontract.outputs.OPTIONAL_HEAD_OUTPUTS``; only
models exported with it have it)."""


class PredictRequest(_Frozen):
    """``{"inputs": [{"image": ...} | {"tensor": ...}], "top_k": 5, "include": ["probs"],
    "coverage": 0.95, "risk": 0.02}``.

    ``include`` (default none) adds the named per-class vectors to every result (see
    ``ExtraOutput``); the default answer stays as it is. ``coverage`` and ``risk`` (optional)
    pick a prediction-set coverage and an abstention risk from the model's calibration table
    (``ModelDetail.decisions``) instead of its defaults."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    inputs: list[ImageInput | TensorInput] = Field(min_length=1)
    top_k: int = Field(default=MAX_TOP_K_DEFAULT, ge=1)
    include: list[ExtraOutput] = Field(default_factory=list, max_length=2)
    coverage: float | None = Field(
        default=None, gt=0, lt=1, description="prediction-set coverage, one the model offers"
    )
    risk: float | None = Field(
        default=None, gt=0, lt=1, description="abstention risk, one the model offers"
    )


# ---- answers --------------------------------------------------------------------------------


class Prediction(_Frozen):
    class_id: int
    label: str
    probability: float


class LatentCorrelation(_Frozen):
    """Correlation of the LATENT logits among the top classes, rows and columns in
    ``class_ids`` order: ``corr_ij = S_ij / sqrt(S_ii S_jj)`` (Collier et al., CVPR 2021). For
    a softmax head S is the centred covariance ``C Sigma C`` (``C = I - 1 1^T / K``; a common
    shift of all logits is invisible to a softmax, so Sigma's all-ones part is never learned);
    for a sigmoid head S is Sigma itself. It says how the logits co-vary under the learned
    noise, whatever the classes' probabilities: where the probability moves is ``confusable``.
    The identity for a deterministic head."""

    class_ids: list[int]
    matrix: list[list[float]]


class ConfusedWith(_Frozen):
    """One class another class's probability moves to, and its ``share`` of that movement."""

    class_id: int
    label: str
    share: float


class Confusable(_Frozen):
    """For one top class i, the classes its probability moves to under the learned noise,
    largest share first. Softmax heads: over the model's samples ``p_s = softmax(u_s / tau)``
    with ``C_ij = Cov_s(p_i, p_j)``, ``share_ij = max(0, -C_ij) / sum_{l != i} max(0, -C_il)``:
    the part of class i's probability movement that class j takes (in [0, 1], summing to 1
    over all other classes; when no class moves with i, the noise lowering class i's
    probability by delta raises class j's by ``share_ij * delta`` on average). Sigmoid head:
    ``max(0, C_ij) / sum_{l != i} max(0, C_il)``, how label i's co-movement splits over the
    labels that rise with it (co-occurring labels). Only shares of at least
    ``MIN_CONFUSABLE_SHARE`` are listed, so the list is empty where the noise does not move
    class i (always for a deterministic head: it makes no claim of confusion). ``withheld``:
    the noise moves class i, but the model's samples cannot say where precisely enough (a
    share's own standard error, or that of the movement itself, is too large); the list is
    then empty too (older gateways leave this out: read it as False)."""

    class_id: int
    confused_with: list[ConfusedWith]
    withheld: bool = False

    @model_serializer(mode="wrap")
    def _withheld_only_when_true(self, handler: SerializerFunctionWrapHandler):
        """``withheld`` is in the JSON only when true, as the gateway writes it: an answer
        without withheld shares is the same JSON as before they existed. (No return annotation:
        pydantic then keeps the model's own serialization schema for the OpenAPI document.)"""
        data = handler(self)
        if not data.get("withheld"):
            data.pop("withheld", None)
        return data


class Uncertainty(_Frozen):
    """Predictive entropy ``H[p_bar]`` (nats) and ``normalized_entropy = H / log K``;
    ``expected_entropy`` the mean entropy of the MC samples; ``mutual_information`` their
    difference; the latent correlation of the top classes; and, per top class, where its
    probability moves (``confusable``)."""

    predictive_entropy: float
    normalized_entropy: float
    expected_entropy: float
    mutual_information: float
    latent_correlation: LatentCorrelation
    confusable: list[Confusable]


class SetMember(_Frozen):
    """One class of a prediction set."""

    class_id: int
    label: str


class PredictionSet(_Frozen):
    """The classes the image's label is among with probability at least ``coverage``
    (split conformal, thresholds calibrated at export on labelled images; the model info says
    on how many and whether their labels were noisy), most probable first. Empty when no class
    is plausible enough at that coverage (an image unlike the calibration images)."""

    coverage: float
    classes: list[SetMember]


class Decision(_Frozen):
    """Whether to use the top class as it is (``accept``) or send the image to review. Among
    accepted images the top-1 error is at most ``risk`` with probability at least
    ``1 - delta`` over the calibration draw; ``score`` names the confidence score the rule
    thresholds (``hetcontract.decision_scores``)."""

    accept: bool
    risk: float
    delta: float
    score: str


class Result(_Frozen):
    """One input's answer; ``probs`` / ``latent_probs`` (K floats, class id order) only when
    the request's ``include`` asked for them; ``prediction_set`` and ``decision`` only from a
    calibrated model."""

    predictions: list[Prediction]
    uncertainty: Uncertainty
    probs: list[float] | None = None
    latent_probs: list[float] | None = None
    prediction_set: PredictionSet | None = None
    decision: Decision | None = None

    @model_serializer(mode="wrap")
    def _without_absent_fields(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        """An answer without ``probs`` / ``latent_probs`` (not asked for) or without
        ``prediction_set`` / ``decision`` (an uncalibrated model) has no such keys (not
        ``null``): the default answer's JSON is the same as before they existed."""
        data = handler(self)
        for name in _OPTIONAL_FIELDS:
            if data.get(name) is None:
                data.pop(name, None)
        return data


_OPTIONAL_FIELDS = ("probs", "latent_probs", "prediction_set", "decision")


class ServedModel(_Frozen):
    """The model that answered."""

    name: str
    version: str
    num_classes: int
    mc_samples: int
    temperature: float


class PredictResponse(_Frozen):
    model: ServedModel
    results: list[Result]
    request_id: str


class ModelSummary(_Frozen):
    """A served model; ``extra_outputs`` the per-class vectors a request may ``include`` from
    it (``probs`` always; ``latent_probs`` where the model was exported with it)."""

    name: str
    version: str
    ready: bool
    head: str
    num_classes: int
    labels: list[str]
    extra_outputs: list[ExtraOutput] = Field(default_factory=list)


class ModelList(_Frozen):
    default_model: str | None = None
    models: list[ModelSummary]


class DecisionSupport(_Frozen):
    """Whether a model's answers carry ``prediction_set`` and ``decision``, and why not:
    ``reason`` says what the calibration is (images, label source, date) or why there is
    none. The levels a request may ask for, and the defaults an answer uses."""

    available: bool
    reason: str
    coverages: list[float] = Field(default_factory=list)
    default_coverage: float | None = None
    risks: list[float] = Field(default_factory=list)
    default_risk: float | None = None
    delta: float | None = None
    label_source: str | None = None
    estimated_accuracy_score: str | None = None
    calibrated_accuracy: float | None = None


class ModelDetail(ModelSummary):
    """A model's summary, what decisions it supports, and its whole model card
    (``hetcontract.ModelCard`` as JSON, the ``calibration`` section included)."""

    model_card: dict[str, Any]
    decisions: DecisionSupport | None = None


# ---- errors ---------------------------------------------------------------------------------


class ErrorBody(_Frozen):
    code: str = Field(description="machine-readable: an ``ErrorCode`` (``hetcontract.errors``), "
                                  "e.g. 'model_not_found', 'invalid_image'")
    message: str


class ErrorResponse(_Frozen):
    """Every error answer: ``{"error": {"code": ..., "message": ...}}``."""

    error: ErrorBody
