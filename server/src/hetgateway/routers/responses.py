"""OpenAPI descriptions of the error answers routes can give (all ``ErrorResponse``)."""

from __future__ import annotations

from typing import Any

from hetcontract import ErrorResponse

_DESCRIPTIONS = {
    400: "Malformed request (empty body, broken JSON or multipart)",
    401: "API keys are configured and none matching was sent",
    403: "Model control without API keys configured",
    404: "Unknown model",
    409: "Triton refused to load or unload the model (its reason; what served still serves)",
    413: "Body, batch or image beyond the limits",
    415: "Not an image, or an unsupported Content-Type",
    422: "Invalid input (tensor shape, NaN, top_k out of range)",
    503: "Triton unreachable, the model not ready, or the gateway shutting down (Retry-After)",
    504: "Triton did not answer in time",
}


def error_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """The ``responses=`` argument documenting these error statuses."""
    return {
        status: {"model": ErrorResponse, "description": _DESCRIPTIONS[status]}
        for status in statuses
    }
