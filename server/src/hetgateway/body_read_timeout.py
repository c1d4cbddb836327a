"""A deadline on receiving a request's body, so slow or stalled clients cannot hold a request.

Typical usage::

    app = BodyReadTimeoutMiddleware(app, timeout_s=30)

The whole body must arrive within ``timeout_s`` of the request's start; the read that misses
the deadline raises ``RequestTimeout`` (answered 408 by ``http_errors``, after which uvicorn
closes the connection because the body was not read to its end). Reads after the body is
complete (waiting for a disconnect) are not timed. Slow *headers* never reach the app: uvicorn
bounds those connections (``limit_concurrency``), and other clients keep being served.
"""

from __future__ import annotations

import asyncio

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from hetgateway.errors import RequestTimeout


class BodyReadTimeoutMiddleware:
    """Pure ASGI middleware raising ``RequestTimeout`` when the body is not in by the deadline."""

    def __init__(self, app: ASGIApp, *, timeout_s: float) -> None:
        self.app = app
        self.timeout_s = timeout_s

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.timeout_s
        body_complete = False

        async def timed_receive() -> Message:
            nonlocal body_complete
            if body_complete:
                return await receive()
            try:
                message = await asyncio.wait_for(receive(), timeout=deadline - loop.time())
            except TimeoutError as exc:
                raise RequestTimeout(
                    f"the request body did not arrive within {self.timeout_s:g} s"
                ) from exc
            if message["type"] != "http.request" or not message.get("more_body", False):
                body_complete = True
            return message

        await self.app(scope, timed_receive, send)
