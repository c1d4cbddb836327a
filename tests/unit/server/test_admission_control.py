"""Admission control: at most max_in_flight API requests at once; the rest get 429 at once."""

from __future__ import annotations

import asyncio
import time

import httpx
import pytest
from fastapi import FastAPI
from hetgateway.admission import AdmissionGate, AdmissionMiddleware

RETRY_AFTER_S = 2
FAST_REFUSAL_S = 0.5


def _app(gate: AdmissionGate, release: asyncio.Event) -> FastAPI:
    """An app whose predict endpoint stays in flight until ``release`` is set."""
    app = FastAPI()

    @app.post("/v1/predict")
    async def predict() -> dict:
        await release.wait()
        return {"ok": True}

    @app.post("/v1/fail")
    async def fail() -> dict:
        raise RuntimeError("handler failure")

    @app.get("/healthz")
    async def healthz() -> dict:
        return {"status": "ok"}

    app.add_middleware(AdmissionMiddleware, gate=gate, retry_after_s=RETRY_AFTER_S)
    return app


async def _fill_then_probe(
    gate: AdmissionGate, probe: str
) -> tuple[list[int], httpx.Response, float]:
    """Start max_in_flight slow requests, send ``probe`` while they are in flight, release."""
    release = asyncio.Event()
    transport = httpx.ASGITransport(app=_app(gate, release))
    async with httpx.AsyncClient(transport=transport, base_url="http://gw") as client:
        slow = [asyncio.create_task(client.post("/v1/predict")) for _ in range(gate.max_in_flight)]
        while gate.in_flight < gate.max_in_flight:
            await asyncio.sleep(0.001)
        started = time.perf_counter()
        probe_answer = await (client.post(probe) if probe.startswith("/v1/") else client.get(probe))
        elapsed = time.perf_counter() - started
        release.set()
        statuses = [(await task).status_code for task in slow]
    return statuses, probe_answer, elapsed


def test_request_beyond_the_bound_gets_429_with_retry_after_and_error_body_fast() -> None:
    gate = AdmissionGate(max_in_flight=3)
    admitted, refused, elapsed = asyncio.run(_fill_then_probe(gate, "/v1/predict"))
    assert admitted == [200, 200, 200]
    assert refused.status_code == 429
    assert refused.headers["retry-after"] == str(RETRY_AFTER_S)
    assert refused.json()["error"]["code"] == "overloaded"
    assert "3 requests" in refused.json()["error"]["message"]
    assert elapsed < FAST_REFUSAL_S
    assert gate.refused == 1


def test_health_is_answered_while_the_api_is_saturated() -> None:
    gate = AdmissionGate(max_in_flight=2)
    admitted, health, _ = asyncio.run(_fill_then_probe(gate, "/healthz"))
    assert admitted == [200, 200]
    assert health.status_code == 200
    assert gate.refused == 0


def test_slots_are_freed_when_requests_end_even_when_the_handler_fails() -> None:
    gate = AdmissionGate(max_in_flight=1)
    release = asyncio.Event()
    release.set()

    async def scenario() -> list[int]:
        transport = httpx.ASGITransport(app=_app(gate, release), raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://gw") as client:
            failed = await client.post("/v1/fail")
            return [failed.status_code] + [(await client.post("/v1/predict")).status_code
                                           for _ in range(3)]

    assert asyncio.run(scenario()) == [500, 200, 200, 200]
    assert gate.in_flight == 0


@pytest.mark.parametrize("bound", [0, -1])
def test_gate_needs_room_for_at_least_one_request(bound: int) -> None:
    with pytest.raises(ValueError, match="at least 1"):
        AdmissionGate(max_in_flight=bound)
