"""hetserve's contracts, one source of truth shared by export, gateway and SDK.

Typical usage::

    from hetcontract import HEAD_OUTPUTS, INPUT_NAME, ModelCard, PredictResponse

    names = [spec.name for spec in HEAD_OUTPUTS]        # what the ONNX graph must output
    card = ModelCard.model_validate_json(text)          # what the exporter writes
    answer = PredictResponse.model_validate(payload)    # what the gateway returns

The package depends on pydantic only, so the SDK can carry it without the gateway's or the
exporter's dependencies; ``hetcontract.decision_scores`` (the scores decisions are calibrated
and served on) needs numpy too (the ``scores`` extra) and is imported only where it is used.
"""

from hetcontract.api import (
    API_VERSION,
    MIN_CONFUSABLE_SHARE,
    Confusable,
    ConfusedWith,
    Decision,
    DecisionSupport,
    ErrorBody,
    ErrorResponse,
    ExtraOutput,
    ImageInput,
    LatentCorrelation,
    ModelDetail,
    ModelList,
    ModelSummary,
    Prediction,
    PredictionSet,
    PredictRequest,
    PredictResponse,
    Result,
    ServedModel,
    SetMember,
    TensorInput,
    Uncertainty,
)
from hetcontract.calibration import (
    Abstention,
    AccuracyEstimate,
    Calibration,
    PredictionSets,
    RiskThreshold,
    SetThresholds,
)
from hetcontract.errors import (
    ERRORS,
    RETRYABLE_STATUSES,
    ErrorCode,
    ErrorSpec,
    status_meaning,
)
from hetcontract.model_card import InputSpec, McError, ModelCard, MonteCarloSpec
from hetcontract.outputs import (
    HEAD_OUTPUTS,
    INPUT_NAME,
    MODEL_CARD_FILENAME,
    MODEL_CARD_PARAMETER,
    OPTIONAL_HEAD_OUTPUTS,
    WITHHELD_SHARE,
    OutputName,
    TensorSpec,
    output_spec,
)

__all__ = [
    "API_VERSION",
    "Abstention",
    "AccuracyEstimate",
    "Calibration",
    "PredictionSets",
    "RiskThreshold",
    "SetThresholds",
    "ERRORS",
    "RETRYABLE_STATUSES",
    "HEAD_OUTPUTS",
    "INPUT_NAME",
    "MODEL_CARD_FILENAME",
    "MIN_CONFUSABLE_SHARE",
    "MODEL_CARD_PARAMETER",
    "OPTIONAL_HEAD_OUTPUTS",
    "Confusable",
    "ConfusedWith",
    "Decision",
    "DecisionSupport",
    "ErrorBody",
    "ErrorCode",
    "ErrorResponse",
    "ErrorSpec",
    "ExtraOutput",
    "ImageInput",
    "InputSpec",
    "LatentCorrelation",
    "McError",
    "ModelCard",
    "MonteCarloSpec",
    "ModelDetail",
    "ModelList",
    "ModelSummary",
    "OutputName",
    "Prediction",
    "PredictionSet",
    "PredictRequest",
    "PredictResponse",
    "Result",
    "ServedModel",
    "SetMember",
    "TensorInput",
    "TensorSpec",
    "Uncertainty",
    "WITHHELD_SHARE",
    "output_spec",
    "status_meaning",
]
