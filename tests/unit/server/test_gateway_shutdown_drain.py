"""The gateway on SIGTERM, served by uvicorn in this process (the fake backend behind it): it
says not ready first, keeps answering for the drain period (each answer closing its
connection), then stops accepting, finishes the request still in flight, and exits. A second
SIGTERM ends the drain at once; without a Python handler to hand over to, or outside the main
thread, nothing is installed."""

from __future__ import annotations

import asyncio
import base64
import io
import os
import signal
import threading
import time
from collections.abc import Iterator

import httpx
import numpy as np
import pytest
import uvicorn
from hetgateway.app import create_app
from hetgateway.settings import load_settings
from hetgateway.shutdown_drain import ShutdownDrain
from PIL import Image

DRAIN_S = 0.8


def _png() -> str:
    buffer = io.BytesIO()
    Image.fromarray(np.full((28, 28), 128, np.uint8)).save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode()


BODY = {"inputs": [{"image": _png()}], "top_k": 1}


@pytest.fixture
def sigterm_caught() -> Iterator[list[int]]:
    """SIGTERM handled by a recorder while the test runs (uvicorn raises the signal again once
    it has shut down; the test process must survive that)."""
    received: list[int] = []
    previous = signal.signal(signal.SIGTERM, lambda signum, frame: received.append(signum))
    try:
        yield received
    finally:
        signal.signal(signal.SIGTERM, previous)


def _server(app, port: int) -> uvicorn.Server:
    config = uvicorn.Config(app, host="127.0.0.1", port=port, lifespan="on", log_level="error",
                            timeout_graceful_shutdown=5)
    return uvicorn.Server(config)


async def _wait_started(server: uvicorn.Server) -> None:
    while not server.started:
        await asyncio.sleep(0.01)


def test_sigterm_says_not_ready_serves_on_for_the_drain_then_stops_after_the_last_answer(
    fake_backend, sigterm_caught, unused_port
):
    app = create_app(load_settings(drain_s=DRAIN_S),
                     backend_factory=lambda _settings, _metrics: fake_backend,
                     drain_on_sigterm=True)
    port = unused_port()
    url = f"http://127.0.0.1:{port}"
    server = _server(app, port)

    async def scenario() -> dict[str, object]:
        seen: dict[str, object] = {}
        serving = asyncio.create_task(server.serve())
        await _wait_started(server)
        async with httpx.AsyncClient(base_url=url, timeout=10) as client:
            seen["ready before"] = (await client.get("/readyz")).status_code
            gate = fake_backend.gate = asyncio.Event()  # the next prediction stays in flight
            held = asyncio.create_task(client.post("/v1/predict", json=BODY))
            while not fake_backend.in_flight:
                await asyncio.sleep(0.01)
            signalled = time.monotonic()
            os.kill(os.getpid(), signal.SIGTERM)
            await asyncio.sleep(0.1)

            readiness = await client.get("/readyz")
            seen["ready draining"] = (readiness.status_code, readiness.json()["error"]["code"],
                                      readiness.headers.get("connection"))
            fake_backend.gate = None  # new predictions answer at once again
            during = await client.post("/v1/predict", json=BODY)
            seen["predict draining"] = (during.status_code, during.headers.get("connection"))

            while time.monotonic() - signalled < DRAIN_S + 0.3:
                await asyncio.sleep(0.05)
            try:
                await client.get("/healthz")
                seen["after drain"] = "answered"
            except httpx.ConnectError:
                seen["after drain"] = "refused"
            seen["held done before release"] = held.done()
            gate.set()  # the request in flight since before SIGTERM is answered
            seen["held"] = (await held).status_code
        await asyncio.wait_for(serving, timeout=10)
        seen["stopped after"] = time.monotonic() - signalled
        return seen

    seen = asyncio.run(scenario())
    assert seen["ready before"] == 200
    assert seen["ready draining"] == (503, "shutting_down", "close")
    assert seen["predict draining"] == (200, "close")
    assert seen["after drain"] == "refused"
    assert seen["held done before release"] is False
    assert seen["held"] == 200
    assert DRAIN_S <= seen["stopped after"] < DRAIN_S + 5
    assert fake_backend.closed
    assert sigterm_caught == [signal.SIGTERM]  # uvicorn passed the signal on once it stopped


def test_a_second_sigterm_ends_the_drain_at_once(fake_backend, sigterm_caught, unused_port):
    app = create_app(load_settings(drain_s=30),
                     backend_factory=lambda _settings, _metrics: fake_backend,
                     drain_on_sigterm=True)
    server = _server(app, unused_port())

    async def scenario() -> float:
        serving = asyncio.create_task(server.serve())
        await _wait_started(server)
        started = time.monotonic()
        os.kill(os.getpid(), signal.SIGTERM)
        await asyncio.sleep(0.3)
        assert not serving.done() and app.state.drain.draining
        os.kill(os.getpid(), signal.SIGTERM)
        await asyncio.wait_for(serving, timeout=10)
        return time.monotonic() - started

    assert asyncio.run(scenario()) < 5


def test_without_drain_sigterm_stops_at_once_and_readiness_is_already_false(
    fake_backend, sigterm_caught, unused_port
):
    app = create_app(load_settings(drain_s=0),
                     backend_factory=lambda _settings, _metrics: fake_backend,
                     drain_on_sigterm=True)
    server = _server(app, unused_port())

    async def scenario() -> float:
        serving = asyncio.create_task(server.serve())
        await _wait_started(server)
        started = time.monotonic()
        os.kill(os.getpid(), signal.SIGTERM)
        await asyncio.wait_for(serving, timeout=10)
        assert app.state.drain.draining
        return time.monotonic() - started

    assert asyncio.run(scenario()) < 2


def test_the_drain_installs_only_where_it_can_hand_the_signal_over(sigterm_caught):
    async def in_loop(drain: ShutdownDrain) -> bool:
        installed = drain.install()
        await drain.close()
        return installed

    previous = signal.signal(signal.SIGTERM, signal.SIG_DFL)
    try:  # no Python handler (nothing like uvicorn's) to run once drained
        assert asyncio.run(in_loop(ShutdownDrain(drain_s=1))) is False
        assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL
    finally:
        signal.signal(signal.SIGTERM, previous)

    results: list[bool] = []  # a test client serves the app from another thread
    thread = threading.Thread(target=lambda: results.append(
        asyncio.run(in_loop(ShutdownDrain(drain_s=1)))))
    thread.start()
    thread.join()
    assert results == [False]
