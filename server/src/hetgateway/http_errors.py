"""The one place where errors become HTTP answers: ``{"error": {"code", "message"}}``.

Domain errors (``hetgateway.errors``) map by class to a machine-readable code, whose status the
contract owns (``hetcontract.errors``);
FastAPI's validation errors and Starlette's HTTP errors (unknown route, wrong method) are
answered in the same shape; anything unexpected becomes a 500 without a traceback. 503
answers carry ``Retry-After``.

Typical usage::

    install_error_handlers(app, retry_after_s=1)
    response = error_response(PayloadTooLarge("..."), retry_after_s=1)   # from middleware
"""

from __future__ import annotations

import logging
from typing import NamedTuple

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from hetcontract import ERRORS, RETRYABLE_STATUSES, ErrorBody, ErrorCode, ErrorResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from hetgateway.errors import (
    BackendError,
    BackendTimeout,
    BackendUnavailable,
    ClientError,
    Forbidden,
    GatewayError,
    InvalidImage,
    InvalidInput,
    MalformedRequest,
    MethodNotAllowed,
    ModelLoadRefused,
    ModelNotFound,
    ModelNotReady,
    Overloaded,
    PayloadTooLarge,
    RequestTimeout,
    RouteNotFound,
    ShuttingDown,
    Unauthorized,
    UnsupportedMediaType,
)

_LOG = logging.getLogger(__name__)


class HttpError(NamedTuple):
    """How one domain error is answered: its status and code (``hetcontract.ERRORS``)."""

    status: int
    code: ErrorCode

    @classmethod
    def of(cls, code: ErrorCode) -> HttpError:
        """The answer the contract gives ``code``."""
        return cls(ERRORS[code].status, code)


ERROR_CODES: dict[type[GatewayError], ErrorCode] = {
    ClientError: ErrorCode.BAD_REQUEST,
    MalformedRequest: ErrorCode.MALFORMED_REQUEST,
    Unauthorized: ErrorCode.UNAUTHORIZED,
    Forbidden: ErrorCode.FORBIDDEN,
    ModelNotFound: ErrorCode.MODEL_NOT_FOUND,
    RouteNotFound: ErrorCode.NOT_FOUND,
    MethodNotAllowed: ErrorCode.METHOD_NOT_ALLOWED,
    RequestTimeout: ErrorCode.REQUEST_TIMEOUT,
    ModelLoadRefused: ErrorCode.MODEL_LOAD_REFUSED,
    PayloadTooLarge: ErrorCode.PAYLOAD_TOO_LARGE,
    InvalidImage: ErrorCode.INVALID_IMAGE,
    UnsupportedMediaType: ErrorCode.UNSUPPORTED_MEDIA_TYPE,
    InvalidInput: ErrorCode.INVALID_INPUT,
    Overloaded: ErrorCode.OVERLOADED,
    BackendError: ErrorCode.BACKEND_ERROR,
    ModelNotReady: ErrorCode.MODEL_NOT_READY,
    BackendUnavailable: ErrorCode.BACKEND_UNAVAILABLE,
    ShuttingDown: ErrorCode.SHUTTING_DOWN,
    BackendTimeout: ErrorCode.BACKEND_TIMEOUT,
}
"""Each domain error class's code; its status is the contract's."""
ERROR_TABLE: dict[type[GatewayError], HttpError] = {
    error: HttpError.of(code) for error, code in ERROR_CODES.items()
}
INTERNAL_ERROR = HttpError.of(ErrorCode.INTERNAL_ERROR)

_STARLETTE_STATUS_ERRORS: dict[int, type[GatewayError]] = {
    400: MalformedRequest,
    404: RouteNotFound,
    405: MethodNotAllowed,
    413: PayloadTooLarge,
    415: UnsupportedMediaType,
    422: InvalidInput,
}


def http_error_for(exc: GatewayError) -> HttpError:
    """Status and code of a domain error (the nearest class in the table)."""
    for cls in type(exc).__mro__:
        if cls in ERROR_TABLE:
            return ERROR_TABLE[cls]
    return INTERNAL_ERROR


def error_response(exc: GatewayError, *, retry_after_s: int) -> JSONResponse:
    """The HTTP answer to a domain error."""
    mapped = http_error_for(exc)
    return _answer(mapped, str(exc), retry_after_s=retry_after_s)


def install_error_handlers(app: FastAPI, *, retry_after_s: int) -> None:
    """Register every error handler of the app."""

    async def on_gateway_error(_: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, GatewayError)
        return error_response(exc, retry_after_s=retry_after_s)

    async def on_validation_error(_: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, RequestValidationError)
        return error_response(InvalidInput(describe_validation(exc.errors())),
                              retry_after_s=retry_after_s)

    async def on_http_error(_: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, StarletteHTTPException)
        error_class = _STARLETTE_STATUS_ERRORS.get(exc.status_code)
        if error_class is None:
            mapped = HttpError(exc.status_code, ErrorCode.HTTP_ERROR)
            return _answer(mapped, str(exc.detail), retry_after_s=retry_after_s)
        message = str(exc.detail)
        if exc.status_code == 404 and message == "Not Found":
            message = "no such path; see /docs for the API"
        return error_response(error_class(message), retry_after_s=retry_after_s)

    async def on_unexpected(_: Request, exc: Exception) -> JSONResponse:
        _LOG.error("unexpected error: %r", exc, exc_info=exc)
        return _answer(INTERNAL_ERROR, "unexpected gateway error", retry_after_s=retry_after_s)

    app.add_exception_handler(GatewayError, on_gateway_error)
    app.add_exception_handler(RequestValidationError, on_validation_error)
    app.add_exception_handler(StarletteHTTPException, on_http_error)
    app.add_exception_handler(Exception, on_unexpected)


def describe_validation(errors: object) -> str:
    """A one-line summary of pydantic/FastAPI validation errors: ``loc: msg; ...``."""
    parts = []
    for error in errors if isinstance(errors, list) else []:
        location = ".".join(str(part) for part in error.get("loc", ()))
        parts.append(f"{location}: {error.get('msg', 'invalid')}" if location else
                     str(error.get("msg", "invalid")))
    return "; ".join(parts) or "invalid request"


def _answer(mapped: HttpError, message: str, *, retry_after_s: int) -> JSONResponse:
    body = ErrorResponse(error=ErrorBody(code=mapped.code, message=message))
    headers = {"Retry-After": str(retry_after_s)} if mapped.status in RETRYABLE_STATUSES else None
    return JSONResponse(body.model_dump(), status_code=mapped.status, headers=headers)
