"""The gateway's HTTP API schema: requests, answers and errors (see ARCHITECTURE.md).

The gateway builds its answers from these models and the SDK parses them with the same
models, so the two cannot drift apart.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

MAX_TOP_K_DEFAULT = 5


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


class PredictRequest(_Frozen):
    """``{"inputs": [{"image": ...} | {"tensor": ...}], "top_k": 5}``."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    inputs: list[ImageInput | TensorInput] = Field(min_length=1)
    top_k: int = Field(default=MAX_TOP_K_DEFAULT, ge=1)


# ---- answers --------------------------------------------------------------------------------


class Prediction(_Frozen):
    class_id: int
    label: str
    probability: float


class ClassCorrelation(_Frozen):
    """Correlation of the latent logits among the top classes, rows and columns in
    ``class_ids`` order: ``corr_ij = S_ij / sqrt(S_ii S_jj)``. For a softmax head S is the
    centred covariance ``C Sigma C`` (``C = I - 1 1^T / K``; a common shift of all logits is
    invisible to a softmax, so Sigma's all-ones part is never learned), and a negative
    ``corr_ij`` means the noise moves probability between i and j. For a sigmoid head S is
    Sigma itself (positive = the labels co-occur). The identity for a deterministic head."""

    class_ids: list[int]
    matrix: list[list[float]]


class Correlated(_Frozen):
    class_id: int
    label: str
    correlation: float


class Confusable(_Frozen):
    """For one top class, the m other classes the label noise ties to it (see
    ``ClassCorrelation`` for the correlation): softmax heads list the most NEGATIVE centred
    correlations first (where the class's probability goes when the noise moves it), the
    sigmoid head the most POSITIVE raw ones (co-occurring labels); ``correlation`` is the
    value as it is. A deterministic head gives correlations 0 (its ids carry no meaning)."""

    class_id: int
    correlated: list[Correlated]


class Uncertainty(_Frozen):
    """Predictive entropy ``H[p_bar]`` (nats) and ``normalized_entropy = H / log K``;
    ``expected_entropy`` the mean entropy of the MC samples; ``mutual_information`` their
    difference; and the class correlation of the top classes."""

    predictive_entropy: float
    normalized_entropy: float
    expected_entropy: float
    mutual_information: float
    class_correlation: ClassCorrelation
    confusable: list[Confusable]


class Result(_Frozen):
    predictions: list[Prediction]
    uncertainty: Uncertainty


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
    name: str
    version: str
    ready: bool
    head: str
    num_classes: int
    labels: list[str]


class ModelList(_Frozen):
    default_model: str | None = None
    models: list[ModelSummary]


class ModelDetail(ModelSummary):
    """A model's summary plus its whole model card (``hetcontract.ModelCard`` as JSON)."""

    model_card: dict[str, Any]


# ---- errors ---------------------------------------------------------------------------------


class ErrorBody(_Frozen):
    code: str = Field(description="machine-readable, e.g. 'model_not_found', 'invalid_image'")
    message: str


class ErrorResponse(_Frozen):
    """Every error answer: ``{"error": {"code": ..., "message": ...}}``."""

    error: ErrorBody
