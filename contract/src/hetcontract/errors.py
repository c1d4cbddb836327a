"""The gateway's error answers: every machine-readable code, the HTTP status it comes with,
and whether a client should send the request again later.

The gateway turns its domain errors into these codes in one place
(``hetgateway.http_errors``); the SDK turns statuses into exception classes in one place
(``hetclient.errors``); both read this table, so they cannot disagree. An answer's body is
``ErrorResponse``: ``{"error": {"code": "<ErrorCode>", "message": "..."}}``; a client meets an
unknown code from a newer gateway by its status.

Typical usage::

    status = ERRORS[ErrorCode.MODEL_NOT_READY].status        # 503
    retry = status in RETRYABLE_STATUSES                      # True: Retry-After is sent
"""

from __future__ import annotations

from enum import StrEnum
from typing import NamedTuple


class ErrorCode(StrEnum):
    """The ``code`` of an error answer."""

    BAD_REQUEST = "bad_request"
    MALFORMED_REQUEST = "malformed_request"
    UNAUTHORIZED = "unauthorized"
    FORBIDDEN = "forbidden"
    MODEL_NOT_FOUND = "model_not_found"
    NOT_FOUND = "not_found"
    METHOD_NOT_ALLOWED = "method_not_allowed"
    REQUEST_TIMEOUT = "request_timeout"
    MODEL_LOAD_REFUSED = "model_load_refused"
    PAYLOAD_TOO_LARGE = "payload_too_large"
    INVALID_IMAGE = "invalid_image"
    UNSUPPORTED_MEDIA_TYPE = "unsupported_media_type"
    INVALID_INPUT = "invalid_input"
    OVERLOADED = "overloaded"
    INTERNAL_ERROR = "internal_error"
    BACKEND_ERROR = "backend_error"
    MODEL_NOT_READY = "model_not_ready"
    BACKEND_UNAVAILABLE = "backend_unavailable"
    SHUTTING_DOWN = "shutting_down"
    BACKEND_TIMEOUT = "backend_timeout"
    HTTP_ERROR = "http_error"


class ErrorSpec(NamedTuple):
    """How an error code is answered: its HTTP status and what it means."""

    status: int
    meaning: str


ERRORS: dict[ErrorCode, ErrorSpec] = {
    ErrorCode.BAD_REQUEST: ErrorSpec(400, "the request cannot succeed as sent"),
    ErrorCode.MALFORMED_REQUEST: ErrorSpec(400, "a body that cannot be parsed (empty, not "
                                                "JSON, broken multipart)"),
    ErrorCode.UNAUTHORIZED: ErrorSpec(401, "API keys are configured and none matching was "
                                           "sent"),
    ErrorCode.FORBIDDEN: ErrorSpec(403, "not allowed here (model control without API keys "
                                        "configured)"),
    ErrorCode.MODEL_NOT_FOUND: ErrorSpec(404, "no model of that name is served"),
    ErrorCode.NOT_FOUND: ErrorSpec(404, "no such path"),
    ErrorCode.METHOD_NOT_ALLOWED: ErrorSpec(405, "the path exists, the method does not"),
    ErrorCode.REQUEST_TIMEOUT: ErrorSpec(408, "the body arrived too slowly"),
    ErrorCode.MODEL_LOAD_REFUSED: ErrorSpec(409, "Triton refused to load or unload the model "
                                                 "(its reason; what served still serves)"),
    ErrorCode.PAYLOAD_TOO_LARGE: ErrorSpec(413, "body, inputs or image beyond the limits"),
    ErrorCode.INVALID_IMAGE: ErrorSpec(415, "bytes that are not a decodable image, or an image "
                                            "refused (a decompression bomb)"),
    ErrorCode.UNSUPPORTED_MEDIA_TYPE: ErrorSpec(415, "a Content-Type the endpoint does not "
                                                     "take"),
    ErrorCode.INVALID_INPUT: ErrorSpec(422, "well-formed but invalid (tensor shape, NaN, top_k "
                                            "out of range)"),
    ErrorCode.OVERLOADED: ErrorSpec(429, "the gateway is serving its limit of requests "
                                         "(Retry-After)"),
    ErrorCode.INTERNAL_ERROR: ErrorSpec(500, "an unexpected gateway error"),
    ErrorCode.BACKEND_ERROR: ErrorSpec(502, "Triton answered with an error that is not the "
                                            "caller's"),
    ErrorCode.MODEL_NOT_READY: ErrorSpec(503, "the model is not ready in Triton (Retry-After)"),
    ErrorCode.BACKEND_UNAVAILABLE: ErrorSpec(503, "Triton is unreachable or overloaded "
                                                  "(Retry-After)"),
    ErrorCode.SHUTTING_DOWN: ErrorSpec(503, "the gateway got SIGTERM: /readyz says not "
                                            "ready while it still answers (Retry-After)"),
    ErrorCode.BACKEND_TIMEOUT: ErrorSpec(504, "Triton did not answer in time"),
    ErrorCode.HTTP_ERROR: ErrorSpec(400, "any other HTTP error of the server framework, with "
                                         "its own status"),
}
"""Every code with its status (``HTTP_ERROR`` keeps the framework's status; 400 is its
placeholder)."""

RETRYABLE_STATUSES = frozenset({429, 503})
"""Statuses that mean "later", not "never": the gateway sends ``Retry-After`` with them and
the SDK retries them."""


def statuses() -> frozenset[int]:
    """Every status the gateway answers errors with."""
    return frozenset(spec.status for spec in ERRORS.values())


def status_meaning(status: int) -> str:
    """What a status means, from the codes answered with it (for API descriptions)."""
    meanings = [spec.meaning for code, spec in ERRORS.items()
                if spec.status == status and code is not ErrorCode.HTTP_ERROR]
    return "; ".join(meanings)
