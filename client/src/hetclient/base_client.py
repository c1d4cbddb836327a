"""Everything the sync and async clients share and that does no I/O.

Building requests (URL, headers, the JSON body of a prediction), parsing answers into the
contract's models, mapping failures to the SDK's exceptions and deciding whether and how long
to wait before a retry all live here, once. ``Client`` and ``AsyncClient`` add only sending a
request and sleeping (see ``client.py`` and ``async_client.py``).

Retries: a request is retried up to ``max_retries`` times when the gateway answers 429 or 503
or when no answer came (connection error or timeout; predictions are pure functions of their
input, so resending is safe). Every attempt of one call carries the same ``X-Request-ID``.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import TypeVar
from urllib.parse import quote

import httpx
from hetcontract import ModelDetail, ModelList, PredictRequest, PredictResponse
from hetcontract.api import MAX_TOP_K_DEFAULT
from pydantic import BaseModel, ValidationError

from hetclient.errors import (
    REQUEST_ID_HEADER,
    APIConnectionError,
    APIError,
    APIResponseValidationError,
    APIStatusError,
    APITimeoutError,
    InvalidInputError,
    status_error_from_response,
)
from hetclient.inputs import ImageLike, as_input_list, encode_input
from hetclient.retries import (
    DEFAULT_MAX_RETRIES,
    RETRYABLE_STATUS_CODES,
    backoff_delay_s,
    parse_retry_after_s,
)

DEFAULT_TIMEOUT_S = 30.0
DEFAULT_TOP_K = MAX_TOP_K_DEFAULT
"""The gateway's default top_k (from the contract), capped there at the model's k_max. The
SDK sends no ``top_k`` unless one is given, so that default applies (a 3-class model answers
its 3 classes)."""
USER_AGENT = "hetclient/0.1"
JSON_CONTENT_TYPE = "application/json"

ModelT = TypeVar("ModelT", bound=BaseModel)


class BaseClient:
    """Settings and the I/O-free half of a client. Not used directly."""

    def __init__(
        self,
        base_url: str | httpx.URL,
        *,
        timeout_s: float = DEFAULT_TIMEOUT_S,
        max_retries: int = DEFAULT_MAX_RETRIES,
        api_key: str | None = None,
    ) -> None:
        try:
            url = httpx.URL(str(base_url))
        except httpx.InvalidURL as exc:
            raise ValueError(f"base_url is not a URL: {exc}") from exc
        if url.scheme not in ("http", "https") or not url.host:
            raise ValueError(f"base_url must be an http(s) URL, got {str(base_url)!r}")
        if timeout_s <= 0:
            raise ValueError("timeout_s must be > 0")
        if max_retries < 0:
            raise ValueError("max_retries must be >= 0")
        self.base_url = str(url).rstrip("/")
        self.timeout_s = timeout_s
        self.max_retries = max_retries
        self._api_key = api_key

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.base_url!r})"

    # ---- building requests -------------------------------------------------------------

    def _build_request(self, method: str, path: str, *, body: bytes | None = None) -> httpx.Request:
        """One request, with the call's request id (kept across retries) and auth header."""
        headers = {
            "Accept": JSON_CONTENT_TYPE,
            "User-Agent": USER_AGENT,
            REQUEST_ID_HEADER: uuid.uuid4().hex,
        }
        if body is not None:
            headers["Content-Type"] = JSON_CONTENT_TYPE
        if self._api_key is not None:
            headers["Authorization"] = f"Bearer {self._api_key}"
        return httpx.Request(method, self.base_url + path, headers=headers, content=body)

    def _build_predict_request(
        self,
        images: ImageLike | Sequence[ImageLike],
        *,
        model: str | None,
        top_k: int | None,
        include: Sequence[str] = (),
        coverage: float | None = None,
        risk: float | None = None,
    ) -> httpx.Request:
        """``POST /v1/predict`` (default model) or ``/v1/models/{model}/predict`` with
        ``{"inputs": [...], "top_k": k, "include": [...], "coverage": c, "risk": r}``; each of
        the last four only when given (the gateway's defaults for the model then apply)."""
        inputs = [encode_input(item) for item in as_input_list(images)]
        chosen: dict[str, object] = {name: value for name, value in
                                     (("top_k", top_k), ("coverage", coverage), ("risk", risk))
                                     if value is not None}
        if include:
            chosen["include"] = list(include)
        try:
            payload = PredictRequest(inputs=inputs, **chosen)
        except ValidationError as exc:
            reason = exc.errors()[0]["msg"]
            raise InvalidInputError(f"invalid prediction request: {reason}") from exc
        path = "/v1/predict" if model is None else f"{_model_path(model)}/predict"
        body = payload.model_dump_json(exclude_unset=True).encode()
        return self._build_request("POST", path, body=body)

    def _build_models_request(self) -> httpx.Request:
        return self._build_request("GET", "/v1/models")

    def _build_model_request(self, name: str) -> httpx.Request:
        return self._build_request("GET", _model_path(name))

    def _build_health_request(self) -> httpx.Request:
        return self._build_request("GET", "/healthz")

    def _build_ready_request(self) -> httpx.Request:
        return self._build_request("GET", "/readyz")

    # ---- retries -----------------------------------------------------------------------

    def _retry_delay_after_response(
        self, response: httpx.Response, retries_done: int, *, retry_on_status: bool = True
    ) -> float | None:
        """Seconds to wait before resending, or None when this answer is final.

        ``retry_on_status=False`` makes every answer final (``/readyz``: 503 there *is* the
        answer, "not ready")."""
        if (
            not retry_on_status
            or response.status_code not in RETRYABLE_STATUS_CODES
            or retries_done >= self.max_retries
        ):
            return None
        retry_after = parse_retry_after_s(response.headers.get("retry-after"))
        if retry_after is not None:
            return retry_after
        return backoff_delay_s(retries_done)

    def _retry_delay_after_error(self, retries_done: int) -> float | None:
        """Seconds to wait after a connection error or timeout, or None when out of retries."""
        if retries_done >= self.max_retries:
            return None
        return backoff_delay_s(retries_done)

    # ---- answers -----------------------------------------------------------------------

    @staticmethod
    def _connection_error(exc: httpx.TransportError, request: httpx.Request) -> APIError:
        request_id = request.headers.get(REQUEST_ID_HEADER)
        if isinstance(exc, httpx.TimeoutException):
            return APITimeoutError(
                f"no answer from {request.url.host} within the timeout ({type(exc).__name__})",
                request=request,
                request_id=request_id,
            )
        return APIConnectionError(
            f"cannot reach {request.url.scheme}://{request.url.netloc.decode()}: {exc}",
            request=request,
            request_id=request_id,
        )

    @staticmethod
    def _status_error(response: httpx.Response) -> APIStatusError:
        return status_error_from_response(
            response, request_id=response.request.headers.get(REQUEST_ID_HEADER)
        )

    def _parse(self, response: httpx.Response, model: type[ModelT]) -> ModelT:
        """The answer as ``model``, or the typed exception for a non-2xx status."""
        if not response.is_success:
            raise self._status_error(response)
        try:
            return model.model_validate_json(response.content)
        except ValidationError as exc:
            raise APIResponseValidationError(
                response, request_id=response.headers.get(REQUEST_ID_HEADER)
            ) from exc

    def _parse_predict(self, response: httpx.Response) -> PredictResponse:
        return self._parse(response, PredictResponse)

    def _parse_models(self, response: httpx.Response) -> ModelList:
        return self._parse(response, ModelList)

    def _parse_model(self, response: httpx.Response) -> ModelDetail:
        return self._parse(response, ModelDetail)

    def _parse_health(self, response: httpx.Response) -> bool:
        """True for 2xx; any other status raises its typed exception."""
        if not response.is_success:
            raise self._status_error(response)
        return True

    def _parse_ready(self, response: httpx.Response) -> bool:
        """True for 2xx, False for 503 (not ready); any other status raises."""
        if response.status_code == httpx.codes.SERVICE_UNAVAILABLE:
            return False
        return self._parse_health(response)


def _model_path(name: str) -> str:
    if not name:
        raise InvalidInputError("a model name cannot be empty")
    return "/v1/models/" + quote(name, safe="")
