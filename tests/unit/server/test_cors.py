"""CORS: off unless ``HETSERVE_CORS_ORIGINS`` is set; when set, it wraps every other layer, so
that a browser on an allowed origin can read every answer (a 429 from the full gate and a 401
from the key check included), and a preflight is answered without a key and without taking a
place in the admission gate. Other origins get no CORS headers."""

from __future__ import annotations

import asyncio

import httpx
import pytest
from hetgateway.app import create_app
from hetgateway.settings import load_settings

ALLOWED = "https://app.example"
OTHER = "https://evil.example"
KEY = "k-123456789"


def _app(**overrides):
    return create_app(load_settings(triton_grpc_url="127.0.0.1:9", **overrides))


async def _call(app, method: str, path: str, **kwargs) -> httpx.Response:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://gw") as client:
        return await client.request(method, path, **kwargs)


def _run(app, method: str, path: str, **kwargs) -> httpx.Response:
    return asyncio.run(_call(app, method, path, **kwargs))


def test_without_origins_no_answer_carries_cors_headers():
    answer = _run(_app(), "GET", "/healthz", headers={"Origin": ALLOWED})
    assert answer.status_code == 200
    assert "access-control-allow-origin" not in answer.headers


def test_an_allowed_origin_reads_answers_and_the_request_id():
    answer = _run(_app(cors_origins=f"{ALLOWED}, https://other.example"), "GET", "/healthz",
                  headers={"Origin": ALLOWED})
    assert answer.status_code == 200
    assert answer.headers["access-control-allow-origin"] == ALLOWED
    exposed = answer.headers["access-control-expose-headers"].lower()
    assert "x-request-id" in exposed and "retry-after" in exposed


def test_another_origin_gets_no_cors_headers():
    answer = _run(_app(cors_origins=ALLOWED), "GET", "/healthz", headers={"Origin": OTHER})
    assert "access-control-allow-origin" not in answer.headers


def test_a_preflight_is_answered_without_a_key_and_without_entering_the_gate():
    app = _app(cors_origins=ALLOWED, api_keys=KEY, max_in_flight=1)
    gate = app.state.admission
    assert gate.try_enter()  # the gate is full
    try:
        answer = _run(app, "OPTIONS", "/v1/predict", headers={
            "Origin": ALLOWED,
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "content-type, x-api-key",
        })
    finally:
        gate.leave()
    assert answer.status_code == 200
    assert answer.headers["access-control-allow-origin"] == ALLOWED
    assert "POST" in answer.headers["access-control-allow-methods"]
    assert gate.refused == 0


@pytest.mark.parametrize(("status", "code"), [(401, "unauthorized"), (429, "overloaded")])
def test_refusals_carry_cors_headers_so_a_browser_can_read_them(status, code):
    app = _app(cors_origins=ALLOWED, api_keys=KEY, max_in_flight=1, retry_after_s=2)
    gate = app.state.admission
    if status == 429:
        assert gate.try_enter()
    try:
        answer = _run(app, "POST", "/v1/predict", json={"inputs": []},
                      headers={"Origin": ALLOWED})
    finally:
        if status == 429:
            gate.leave()
    assert answer.status_code == status
    assert answer.headers["access-control-allow-origin"] == ALLOWED
    assert answer.json()["error"]["code"] == code
