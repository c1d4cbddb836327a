"""The request id: taken from the caller when sane, else made; returned, logged, sent to Triton.
The same layer counts and times each request in the metrics, so that an answer passes through
one wrapper for both.

Typical usage::

    app = RequestContextMiddleware(app, metrics=metrics)  # inside admission only: answers
                                                          # past the gate carry the id
    # in a handler: request.state.request_id, or anywhere below it: current_request_id()

The id is accepted from an ``X-Request-ID`` header when it is 1 to 128 characters of
``[A-Za-z0-9._:-]`` (so it can go into logs, headers and Triton's request id unescaped);
otherwise a new one (32 hex digits) is made. Every answer carries it back in ``X-Request-ID``,
and one JSON access-log line per request records method, route template, status and duration,
never the body, the query string or any header. While the gateway drains before shutting down
(``hetgateway.shutdown_drain``), every answer also says ``Connection: close``, so that clients
on keep-alive connections move to another gateway before this one stops accepting.
"""

from __future__ import annotations

import logging
import re
import time
import uuid
from contextvars import ContextVar

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from hetgateway.metrics import GatewayMetrics
from hetgateway.request_metrics import UNMATCHED_ROUTE as UNMATCHED_METRIC_ROUTE
from hetgateway.request_metrics import record_request
from hetgateway.shutdown_drain import ShutdownDrain

REQUEST_ID_HEADER = "x-request-id"
_REQUEST_ID_KEY = REQUEST_ID_HEADER.encode()  # ASGI header names are lower-case bytes
_CONNECTION_CLOSE = (b"connection", b"close")
MAX_REQUEST_ID_LENGTH = 128
_SANE_REQUEST_ID = re.compile(rf"[A-Za-z0-9._:-]{{1,{MAX_REQUEST_ID_LENGTH}}}")
UNMATCHED_ROUTE = "<unmatched>"
MS_PER_S = 1000.0

_request_id: ContextVar[str | None] = ContextVar("hetgateway_request_id", default=None)
_access_log = logging.getLogger("hetgateway.access")


def current_request_id() -> str | None:
    """The id of the request being handled in this task, or None outside a request."""
    return _request_id.get()


def accept_or_make_request_id(candidate: str | None) -> str:
    """The caller's id if it is sane (see the module docstring), else a fresh uuid4 hex."""
    if candidate is not None and _SANE_REQUEST_ID.fullmatch(candidate):
        return candidate
    return uuid.uuid4().hex


def route_template(scope: Scope, *, unmatched: str = UNMATCHED_ROUTE) -> str:
    """The matched route's path template (``/v1/models/{model}/predict``), never the raw path,
    so that logs and metric labels cannot be flooded with caller-chosen strings; ``unmatched``
    when no route matched."""
    path = getattr(scope.get("route"), "path", None)
    return path if isinstance(path, str) else unmatched


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", ()):
        if key.lower() == name:
            return value.decode("latin-1")
    return None


class RequestContextMiddleware:
    """Pure ASGI middleware: sets the request id for the request's task, stores it as
    ``request.state.request_id``, adds ``X-Request-ID`` to the answer, writes the access log
    and, given ``metrics``, counts and times the request (``request_metrics``); given
    ``drain``, answers sent while it drains close their connection."""

    def __init__(self, app: ASGIApp, *, metrics: GatewayMetrics | None = None,
                 drain: ShutdownDrain | None = None) -> None:
        self.app = app
        self.metrics = metrics
        self.drain = drain

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = accept_or_make_request_id(_header(scope, _REQUEST_ID_KEY))
        scope.setdefault("state", {})["request_id"] = request_id
        token = _request_id.set(request_id)
        status = 500  # what the server answers when the app raises before starting a response
        started = time.perf_counter()

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                headers = [h for h in message.get("headers", []) if h[0].lower() != _REQUEST_ID_KEY]
                headers.append((_REQUEST_ID_KEY, request_id.encode()))
                if self.drain is not None and self.drain.draining:
                    headers.append(_CONNECTION_CLOSE)
                message = {**message, "headers": headers}
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            seconds = time.perf_counter() - started
            if self.metrics is not None:
                record_request(
                    self.metrics,
                    scope,
                    route=route_template(scope, unmatched=UNMATCHED_METRIC_ROUTE),
                    status=status,
                    seconds=seconds,
                )
            if _access_log.isEnabledFor(logging.INFO):
                _log_access(scope, status=status, seconds=seconds)
            _request_id.reset(token)


def _log_access(scope: Scope, *, status: int, seconds: float) -> None:
    """The access-log line of one request. The record is made directly (``makeRecord``):
    ``Logger.info`` would also walk the stack to find its caller, on every request."""
    record = _access_log.makeRecord(
        _access_log.name, logging.INFO, __file__, 0, "request", None, None,
        extra={
            "method": scope.get("method"),
            "route": route_template(scope),
            "status": status,
            "duration_ms": round(seconds * MS_PER_S, 3),
        },
    )
    _access_log.handle(record)
