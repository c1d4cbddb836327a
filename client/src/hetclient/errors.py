"""The SDK's exceptions: one hierarchy, one function that maps an HTTP status to its class.

Typical usage::

    try:
        answer = client.predict("shirt.png", model="fashion_het")
    except hetclient.NotFoundError as err:          # 404: unknown model
        print(err.code, err.message, err.request_id)
    except hetclient.APIConnectionError:            # gateway unreachable (or timed out)
        ...

Hierarchy::

    HetserveError
    ├── InvalidInputError (also a ValueError)       an input the SDK cannot send
    └── APIError
        ├── APIResponseValidationError              a 2xx answer that is not the contract's
        ├── APIConnectionError
        │   └── APITimeoutError
        └── APIStatusError                          any non-2xx answer
            ├── BadRequestError                     400
            ├── AuthenticationError                 401
            ├── PermissionDeniedError               403
            ├── NotFoundError                       404
            ├── MethodNotAllowedError               405
            ├── RequestTimeoutError                 408
            ├── ConflictError                       409
            ├── PayloadTooLargeError                413
            ├── UnsupportedMediaTypeError           415
            ├── UnprocessableEntityError            422
            ├── RateLimitError                      429
            ├── InternalServerError                 500 and any other 5xx
            │   └── BadGatewayError                 502
            ├── ServiceUnavailableError             503
            └── GatewayTimeoutError                 504

The statuses are the contract's (``hetcontract.errors``: every status the gateway answers an
error with has a class here, and a test holds the two together); ``code`` is the gateway's
``ErrorCode`` for the answer.
"""

from __future__ import annotations

import httpx
from hetcontract import ErrorResponse
from pydantic import ValidationError

MAX_MESSAGE_CHARS = 500
"""A non-JSON error body (a proxy's HTML page) is cut to this many characters."""
REQUEST_ID_HEADER = "X-Request-ID"
"""The header carrying a call's id: sent by the SDK, echoed by the gateway."""


class HetserveError(Exception):
    """Base of every exception the SDK raises."""


class InvalidInputError(HetserveError, ValueError):
    """An input the SDK cannot turn into a request (unknown type, bad shape, NaN, bad top_k)."""


class APIError(HetserveError):
    """Something went wrong talking to the gateway; ``request_id`` is the ``X-Request-ID`` the
    SDK sent (and the gateway echoes), so the call can be found in the gateway's logs."""

    def __init__(self, message: str, *, request: httpx.Request, request_id: str | None) -> None:
        super().__init__(message)
        self.message = message
        self.request = request
        self.request_id = request_id


class APIResponseValidationError(APIError):
    """The gateway answered 2xx with a body that does not match the HTTP contract."""

    def __init__(self, response: httpx.Response, *, request_id: str | None) -> None:
        super().__init__(
            f"the answer to {response.request.method} {response.request.url.path} "
            "does not match the hetserve API schema",
            request=response.request,
            request_id=request_id,
        )
        self.response = response
        self.status_code = response.status_code


class APIConnectionError(APIError):
    """No answer: the connection failed or broke (after the SDK's retries)."""


class APITimeoutError(APIConnectionError):
    """No answer within the client's timeout (after the SDK's retries)."""


class APIStatusError(APIError):
    """The gateway answered with a non-2xx status; ``code`` and ``message`` are the server's
    ``{"error": {"code", "message"}}`` (``code`` is None when the body was not that)."""

    def __init__(
        self,
        message: str,
        *,
        response: httpx.Response,
        code: str | None,
        request_id: str | None,
    ) -> None:
        super().__init__(
            f"{response.status_code} {code or 'error'}: {message}",
            request=response.request,
            request_id=request_id,
        )
        self.message = message
        self.response = response
        self.status_code = response.status_code
        self.code = code


class BadRequestError(APIStatusError):
    """400: the request is malformed (not an image, bad multipart, bad JSON)."""


class AuthenticationError(APIStatusError):
    """401: an API key is required and was missing or wrong."""


class PermissionDeniedError(APIStatusError):
    """403: not allowed here (model control on a gateway without API keys)."""


class NotFoundError(APIStatusError):
    """404: unknown model or path."""


class MethodNotAllowedError(APIStatusError):
    """405: the path exists, the method does not."""


class RequestTimeoutError(APIStatusError):
    """408: the gateway stopped waiting for the request's body."""


class ConflictError(APIStatusError):
    """409: Triton refused to load or unload a model (what served still serves)."""


class PayloadTooLargeError(APIStatusError):
    """413: body, batch or image dimensions over the gateway's limits."""


class UnsupportedMediaTypeError(APIStatusError):
    """415: the bytes are not an image format the gateway decodes."""


class UnprocessableEntityError(APIStatusError):
    """422: well-formed but invalid (tensor shape, NaN, top_k out of range)."""


class RateLimitError(APIStatusError):
    """429: the gateway is at its in-flight bound; retried after ``Retry-After``."""


class InternalServerError(APIStatusError):
    """500 or any 5xx without a class of its own."""


class BadGatewayError(InternalServerError):
    """502: Triton answered with an error that is not the caller's."""


class ServiceUnavailableError(APIStatusError):
    """503: Triton unreachable or the model not ready; retried after ``Retry-After``."""


class GatewayTimeoutError(APIStatusError):
    """504: Triton did not answer within the gateway's timeout."""


STATUS_ERRORS: dict[int, type[APIStatusError]] = {
    400: BadRequestError,
    401: AuthenticationError,
    403: PermissionDeniedError,
    404: NotFoundError,
    405: MethodNotAllowedError,
    408: RequestTimeoutError,
    409: ConflictError,
    413: PayloadTooLargeError,
    415: UnsupportedMediaTypeError,
    422: UnprocessableEntityError,
    429: RateLimitError,
    500: InternalServerError,
    502: BadGatewayError,
    503: ServiceUnavailableError,
    504: GatewayTimeoutError,
}
"""The class of every status the gateway answers errors with (``hetcontract.errors``)."""

_FIRST_SERVER_ERROR = 500


def error_class_for_status(status_code: int) -> type[APIStatusError]:
    """The exception class for a non-2xx status: its own class, InternalServerError for any
    other 5xx, APIStatusError for any other status."""
    if status_code in STATUS_ERRORS:
        return STATUS_ERRORS[status_code]
    if status_code >= _FIRST_SERVER_ERROR:
        return InternalServerError
    return APIStatusError


def status_error_from_response(
    response: httpx.Response, *, request_id: str | None
) -> APIStatusError:
    """The typed exception for a non-2xx answer, carrying the server's code and message."""
    code: str | None
    try:
        body = ErrorResponse.model_validate_json(response.content).error
        code, message = body.code, body.message
    except ValidationError:
        code = None
        message = response.text[:MAX_MESSAGE_CHARS] or response.reason_phrase
    error_class = error_class_for_status(response.status_code)
    return error_class(
        message,
        response=response,
        code=code,
        request_id=response.headers.get(REQUEST_ID_HEADER, request_id),
    )
