"""ASGI middleware bounding a request body in size and in arrival time, in one pass over it.

Typical usage::

    app = BodySizeLimitMiddleware(app, max_body_bytes=16 * 2**20, read_timeout_s=30,
                                  linger_max_bytes=256 * 2**20, linger_timeout_s=10)

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

Lingering close (as nginx's ``lingering_close``): a client that writes its whole body before it
reads anything (Python's ``requests`` and ``urllib``) would find the connection reset by a
server that answers 413 and closes with most of the body unread, and never see the answer. So
a 413 for an oversize body is sent at once, with ``Connection: close``, and then the rest of
the body is read and thrown away, up to ``linger_max_bytes`` more bytes or ``linger_timeout_s``
seconds, whichever comes first, before the answer is completed and the connection closed.
Clients that read early (curl, httpx, the SDK) have the whole 413 (it carries its
``Content-Length``) as soon as it is sent and close the connection themselves, which ends the
lingering at once.
"""

from __future__ import annotations

import asyncio

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from hetgateway.errors import GatewayError, MalformedRequest, PayloadTooLarge, RequestTimeout
from hetgateway.http_errors import error_response

_CLOSE = (b"connection", b"close")
_END_OF_BODY: Message = {"type": "http.response.body", "body": b"", "more_body": False}


class BodySizeLimitMiddleware:
    """Refuse bodies larger than ``max_body_bytes`` or slower than ``read_timeout_s``."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        max_body_bytes: int,
        read_timeout_s: float | None = None,
        linger_max_bytes: int = 0,
        linger_timeout_s: float = 0.0,
    ) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes
        self.read_timeout_s = read_timeout_s
        self.linger_max_bytes = linger_max_bytes
        self.linger_timeout_s = linger_timeout_s

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        try:
            declared = self._check_declared_length(scope)
        except PayloadTooLarge as exc:
            await self._refuse_and_linger(exc, receive, send)
            return
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
        overflowed = False

        async def guarded_receive() -> Message:
            nonlocal received, body_complete, overflowed
            if body_complete:
                return await receive()
            message = await self._receive_by(deadline, receive)
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_body_bytes:
                    overflowed = True
                    raise PayloadTooLarge(
                        f"request body exceeds the limit of {self.max_body_bytes} bytes"
                    )
            if message["type"] != "http.request" or not message.get("more_body", False):
                body_complete = True
            return message

        if declared is not None:  # the server holds the body to its declared length
            await self.app(scope, guarded_receive, send)
            return

        async def lingering_send(message: Message) -> None:
            """Once the streamed body overflowed: the 413 closes the connection, after
            lingering."""
            if not overflowed:
                await send(message)
            elif message["type"] == "http.response.start":
                await send({**message, "headers": [*message.get("headers", []), _CLOSE]})
            elif message["type"] == "http.response.body" and not message.get("more_body"):
                await send({**message, "more_body": True})
                await self._linger(receive)
                await send(_END_OF_BODY)
            else:
                await send(message)

        await self.app(scope, guarded_receive, lingering_send)

    async def _refuse_and_linger(
        self, exc: PayloadTooLarge, receive: Receive, send: Send
    ) -> None:
        """Send the 413 for ``exc`` (with ``Connection: close``), linger, then end it."""
        answer = error_response(exc, retry_after_s=0)  # a 4xx answer: no Retry-After
        await send({
            "type": "http.response.start",
            "status": answer.status_code,
            "headers": [*answer.raw_headers, _CLOSE],
        })
        await send({"type": "http.response.body", "body": answer.body, "more_body": True})
        await self._linger(receive)
        await send(_END_OF_BODY)

    async def _linger(self, receive: Receive) -> None:
        """Read and discard the rest of the request body: until it ends or the client goes,
        for at most ``linger_max_bytes`` bytes and ``linger_timeout_s`` seconds."""
        if self.linger_max_bytes <= 0 or self.linger_timeout_s <= 0:
            return
        discarded = 0
        try:
            async with asyncio.timeout(self.linger_timeout_s):
                while discarded < self.linger_max_bytes:
                    message = await receive()
                    if message["type"] != "http.request":
                        return
                    discarded += len(message.get("body", b""))
                    if not message.get("more_body", False):
                        return
        except TimeoutError:
            return

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

    def _check_declared_length(self, scope: Scope) -> int | None:
        """The declared ``Content-Length``, None without one; ``PayloadTooLarge`` when it is
        over the limit, ``MalformedRequest`` when it is not a number."""
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
            return declared
        return None
