"""ASGI middleware bounding a request body in size and in arrival time, in one pass over it.

Typical usage::

    app = BodySizeLimitMiddleware(app, max_body_bytes=16 * 2**20, read_timeout_s=30)

Size: a declared ``Content-Length`` over the limit is answered 413 at once, without reading a
byte of the body. A body without one (chunked) is counted as it streams in, and the read that
crosses the limit raises ``PayloadTooLarge`` (answered 413 by ``http_errors``), so at most the
limit plus one chunk is ever held.

Time (``read_timeout_s`` not None): the whole body must arrive within ``read_timeout_s`` of
the request's start; the read that misses the deadline raises ``RequestTimeout`` (answered 408
by ``http_errors``, after which uvicorn closes the connection because the body was not read to
its end). Reads after the body is complete (waiting for a disconnect) are not timed. Slow
*headers* never reach the app: uvicorn bounds those connections (``limit_concurrency``), and
other clients keep being served.

Both checks wrap the same ``receive``, so a request pays for one middleware layer, not two.
"""

from __future__ import annotations

import asyncio

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from hetgateway.errors import GatewayError, MalformedRequest, PayloadTooLarge, RequestTimeout
from hetgateway.http_errors import error_response


class BodySizeLimitMiddleware:
    """Refuse bodies larger than ``max_body_bytes`` or slower than ``read_timeout_s``."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        max_body_bytes: int,
        read_timeout_s: float | None = None,
    ) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes
        self.read_timeout_s = read_timeout_s

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        try:
            self._check_declared_length(scope)
        except GatewayError as exc:
            # a 4xx answer: no Retry-After
            await error_response(exc, retry_after_s=0)(scope, receive, send)
            return
        deadline = (
            None
            if self.read_timeout_s is None
            else asyncio.get_running_loop().time() + self.read_timeout_s
        )
        received = 0
        body_complete = False

        async def guarded_receive() -> Message:
            nonlocal received, body_complete
            if body_complete:
                return await receive()
            message = await self._receive_by(deadline, receive)
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_body_bytes:
                    raise PayloadTooLarge(
                        f"request body exceeds the limit of {self.max_body_bytes} bytes"
                    )
            if message["type"] != "http.request" or not message.get("more_body", False):
                body_complete = True
            return message

        await self.app(scope, guarded_receive, send)

    async def _receive_by(self, deadline: float | None, receive: Receive) -> Message:
        """The next message, or ``RequestTimeout`` if it has not come by ``deadline``."""
        if deadline is None:
            return await receive()
        try:
            async with asyncio.timeout_at(deadline):  # a timer, not a task per read
                return await receive()
        except TimeoutError as exc:
            raise RequestTimeout(
                f"the request body did not arrive within {self.read_timeout_s:g} s"
            ) from exc

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
