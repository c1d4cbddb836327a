"""hetclient: the Python SDK and CLI of the hetserve gateway.

Typical usage::

    import hetclient

    with hetclient.Client("http://127.0.0.1:8080", timeout_s=10) as client:
        answer = client.predict("shirt.png", model="fashion_het", top_k=3)
    top = answer.results[0].predictions[0]
    print(top.label, top.probability, answer.results[0].uncertainty.predictive_entropy)
    result = client.predict("shirt.png", risk=0.02).results[0]   # a calibrated model
    print([c.label for c in result.prediction_set.classes], result.decision.accept)

Answers are the HTTP contract's own models (``hetcontract.PredictResponse`` and friends),
re-exported here; errors are the hierarchy in ``hetclient.errors``.
"""

from hetcontract import (
    Confusable,
    ConfusedWith,
    Decision,
    DecisionSupport,
    ModelDetail,
    ModelList,
    ModelSummary,
    Prediction,
    PredictionSet,
    PredictResponse,
    Result,
    ServedModel,
    SetMember,
    Uncertainty,
)

from hetclient.async_client import AsyncClient
from hetclient.base_client import DEFAULT_TIMEOUT_S, DEFAULT_TOP_K
from hetclient.client import Client
from hetclient.errors import (
    APIConnectionError,
    APIError,
    APIResponseValidationError,
    APIStatusError,
    APITimeoutError,
    AuthenticationError,
    BadGatewayError,
    BadRequestError,
    ConflictError,
    GatewayTimeoutError,
    HetserveError,
    InternalServerError,
    InvalidInputError,
    MethodNotAllowedError,
    NotFoundError,
    PayloadTooLargeError,
    PermissionDeniedError,
    RateLimitError,
    RequestTimeoutError,
    ServiceUnavailableError,
    UnprocessableEntityError,
    UnsupportedMediaTypeError,
    error_class_for_status,
)
from hetclient.inputs import ImageLike
from hetclient.retries import DEFAULT_MAX_RETRIES, INITIAL_RETRY_DELAY_S, MAX_RETRY_DELAY_S

__all__ = [
    "DEFAULT_MAX_RETRIES",
    "DEFAULT_TIMEOUT_S",
    "DEFAULT_TOP_K",
    "INITIAL_RETRY_DELAY_S",
    "MAX_RETRY_DELAY_S",
    "APIConnectionError",
    "APIError",
    "APIResponseValidationError",
    "APIStatusError",
    "APITimeoutError",
    "AsyncClient",
    "AuthenticationError",
    "BadGatewayError",
    "BadRequestError",
    "ConflictError",
    "Client",
    "Confusable",
    "ConfusedWith",
    "Decision",
    "DecisionSupport",
    "GatewayTimeoutError",
    "HetserveError",
    "ImageLike",
    "InternalServerError",
    "InvalidInputError",
    "ModelDetail",
    "ModelList",
    "ModelSummary",
    "MethodNotAllowedError",
    "NotFoundError",
    "PayloadTooLargeError",
    "PermissionDeniedError",
    "PredictResponse",
    "Prediction",
    "PredictionSet",
    "RateLimitError",
    "RequestTimeoutError",
    "Result",
    "ServedModel",
    "ServiceUnavailableError",
    "SetMember",
    "Uncertainty",
    "UnprocessableEntityError",
    "UnsupportedMediaTypeError",
    "error_class_for_status",
]
