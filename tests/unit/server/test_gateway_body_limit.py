"""Bodies over the limit are refused before they are read whole; with lingering on, the 413 is
sent first and then the rest of the body is read and discarded, within its byte and time
bounds, before the answer ends (so that clients that write the whole body first read it)."""

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
    app = BodySizeLimitMiddleware(inner, max_body_bytes=LIMIT)  # no lingering
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


class LingerClient:
    """A client writing ``chunks`` (None: a chunk that never comes); records what it is sent
    and how many chunks were pulled before each message."""

    def __init__(self, chunks: list[bytes | None]) -> None:
        self.chunks = chunks
        self.pulled = 0
        self.sent: list[tuple[int, dict]] = []

    async def receive(self) -> dict:
        chunk = self.chunks[self.pulled]
        if chunk is None:
            await asyncio.sleep(3600)
        self.pulled += 1
        return {"type": "http.request", "body": chunk, "more_body": self.pulled < len(self.chunks)}

    async def send(self, message: dict) -> None:
        self.sent.append((self.pulled, message))


def lingering(client: LingerClient, headers, *, max_bytes: int, timeout_s: float = 5.0) -> None:
    app = BodySizeLimitMiddleware(ReadingApp(), max_body_bytes=LIMIT, linger_max_bytes=max_bytes,
                                  linger_timeout_s=timeout_s)
    scope = {"type": "http", "method": "POST", "path": "/", "headers": headers}
    asyncio.run(app(scope, client.receive, client.send))


def test_a_declared_oversize_body_gets_the_whole_413_first_then_is_drained_and_closed():
    client = LingerClient([b"x" * 60] * 10)
    lingering(client, [(b"content-length", b"600")], max_bytes=10_000)
    (pulled_at_start, start), (pulled_at_body, body), (pulled_at_end, end) = client.sent
    assert start["status"] == 413 and (b"connection", b"close") in start["headers"]
    assert b"payload_too_large" in body["body"] and body["more_body"] is True
    assert pulled_at_start == pulled_at_body == 0  # answered before a byte was read
    assert pulled_at_end == 10 and end == {"type": "http.response.body", "body": b"",
                                           "more_body": False}


def test_draining_stops_at_its_byte_bound():
    client = LingerClient([b"x" * 60] * 10)
    lingering(client, [(b"content-length", b"600")], max_bytes=150)
    assert client.pulled == 3  # 60, 120, 180 >= 150: the connection is then closed
    assert client.sent[-1][1]["more_body"] is False


def test_draining_stops_at_its_time_bound():
    client = LingerClient([b"x" * 60, None])
    lingering(client, [(b"content-length", b"600")], max_bytes=10_000, timeout_s=0.2)
    assert client.pulled == 1 and client.sent[-1][1]["more_body"] is False


def test_a_streamed_body_that_overflows_is_answered_then_drained():
    class AnsweringApp(ReadingApp):
        async def __call__(self, scope, receive, send):
            try:
                await super().__call__(scope, receive, send)
            except PayloadTooLarge:  # as the app's error handler answers it
                await send({"type": "http.response.start", "status": 413, "headers": []})
                await send({"type": "http.response.body", "body": b"too large"})

    client = LingerClient([b"x" * 60] * 10)
    app = BodySizeLimitMiddleware(AnsweringApp(), max_body_bytes=LIMIT,
                                  linger_max_bytes=10_000, linger_timeout_s=5)
    scope = {"type": "http", "method": "POST", "path": "/", "headers": []}
    asyncio.run(app(scope, client.receive, client.send))
    (_, start), (at_body, body), (at_end, end) = client.sent
    assert start["status"] == 413 and (b"connection", b"close") in start["headers"]
    assert body["body"] == b"too large" and body["more_body"] is True and at_body == 2
    assert at_end == 10 and end["more_body"] is False
