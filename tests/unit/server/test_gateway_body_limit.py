"""Bodies over the limit are refused before they are read whole."""

from __future__ import annotations

import asyncio

from hetgateway.body_limit import BodySizeLimitMiddleware
from hetgateway.errors import PayloadTooLarge

LIMIT = 100


class ReadingApp:
    """Reads the whole body and answers 200 with its length; records what it received."""

    def __init__(self) -> None:
        self.received = 0

    async def __call__(self, scope, receive, send):
        more = True
        while more:
            message = await receive()
            self.received += len(message.get("body", b""))
            more = message.get("more_body", False)
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": str(self.received).encode()})


def run(chunks: list[bytes], headers: list[tuple[bytes, bytes]]) -> tuple[int, bytes, int, int]:
    """Send ``chunks`` through the middleware; status, body, bytes the app saw, chunks pulled."""
    inner = ReadingApp()
    app = BodySizeLimitMiddleware(inner, max_body_bytes=LIMIT)
    pulled = 0
    sent: list[dict] = []

    async def receive():
        nonlocal pulled
        pulled += 1
        return {"type": "http.request", "body": chunks[pulled - 1],
                "more_body": pulled < len(chunks)}

    async def send(message):
        sent.append(message)

    async def call():
        scope = {"type": "http", "method": "POST", "path": "/", "headers": headers}
        try:
            await app(scope, receive, send)
        except PayloadTooLarge:  # raised inside the app's read: its error handler answers 413
            return True
        return False

    if asyncio.run(call()):
        return 413, b"payload_too_large", inner.received, pulled
    return sent[0]["status"], sent[1]["body"], inner.received, pulled


def test_a_declared_length_over_the_limit_is_refused_without_reading_the_body():
    status, body, received, pulled = run([b"x" * 10], [(b"content-length", b"1000000")])
    assert status == 413
    assert b"payload_too_large" in body
    assert (received, pulled) == (0, 0)


def test_a_streamed_body_is_stopped_at_the_chunk_that_crosses_the_limit():
    chunks = [b"x" * 60] * 10
    status, _, _, pulled = run(chunks, [])
    assert status == 413
    assert pulled == 2  # 60 then 120 > 100: the remaining 8 chunks are never pulled


def test_bodies_within_the_limit_pass_whole():
    status, body, received, _ = run([b"x" * 50, b"y" * 50], [(b"content-length", b"100")])
    assert (status, body, received) == (200, b"100", 100)


def test_a_non_numeric_content_length_is_a_malformed_request():
    status, body, _, pulled = run([b"x"], [(b"content-length", b"ten")])
    assert status == 400 and b"malformed_request" in body and pulled == 0
