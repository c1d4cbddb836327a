"""ASGI middleware refusing request bodies over a byte limit before they are read whole.

A declared ``Content-Length`` over the limit is answered 413 at once, without reading a byte
of the body. A body without one (chunked) is counted as it streams in, and the read that
crosses the limit raises ``PayloadTooLarge`` (answered 413 by ``http_errors``), so at most
the limit plus one chunk is ever held.
"""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from hetgateway.errors import GatewayError, MalformedRequest, PayloadTooLarge
from hetgateway.http_errors import error_response


class BodySizeLimitMiddleware:
    """Refuse bodies larger than ``max_body_bytes``."""

    def __init__(self, app: ASGIApp, *, max_body_bytes: int, retry_after_s: int = 1) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes
        self.retry_after_s = retry_after_s

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        try:
            self._check_declared_length(scope)
        except GatewayError as exc:
            await error_response(exc, retry_after_s=self.retry_after_s)(scope, receive, send)
            return
        received = 0

        async def counting_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_body_bytes:
                    raise PayloadTooLarge(
                        f"request body exceeds the limit of {self.max_body_bytes} bytes"
                    )
            return message

        await self.app(scope, counting_receive, send)

    def _check_declared_length(self, scope: Scope) -> None:
        for name, value in scope.get("headers", ()):
            if name != b"content-length":
                continue
            try:
                declared = int(value)
            except ValueError as exc:
                raise MalformedRequest("Content-Length is not a number") from exc
            if declared > self.max_body_bytes:
                raise PayloadTooLarge(
                    f"request body of {declared} bytes exceeds the limit of "
                    f"{self.max_body_bytes} bytes"
                )
