"""In the gateway app the admission gate is the outermost layer: with the gate full, an API
request is refused with 429 before any other middleware runs (no request id, no access log
line, no per-route count), refusals are counted in their own metric, and health is answered."""

from __future__ import annotations

import asyncio
import logging

import httpx
import pytest
from hetgateway.app import create_app
from hetgateway.settings import load_settings
from prometheus_client.parser import text_string_to_metric_families

MAX_IN_FLIGHT = 2
RETRY_AFTER_S = 3


@pytest.fixture
def app():
    settings = load_settings(
        max_in_flight=MAX_IN_FLIGHT, retry_after_s=RETRY_AFTER_S, triton_grpc_url="127.0.0.1:9"
    )
    return create_app(settings)


def _sample(text: str, family_name: str, sample_name: str) -> list:
    families = [f for f in text_string_to_metric_families(text) if f.name == family_name]
    return [s for f in families for s in f.samples if s.name == sample_name]


async def _with_full_gate(app, calls):
    """Fill the app's gate as ``MAX_IN_FLIGHT`` admitted requests would, run ``calls``, free it."""
    gate = app.state.admission
    for _ in range(MAX_IN_FLIGHT):
        assert gate.try_enter()
    try:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://gw") as client:
            return [await call(client) for call in calls]
    finally:
        for _ in range(MAX_IN_FLIGHT):
            gate.leave()


def test_a_full_gate_refuses_before_request_context_metrics_and_logging(app, caplog):
    caplog.set_level(logging.INFO, logger="hetgateway.access")
    refused, metrics = asyncio.run(_with_full_gate(app, [
        lambda c: c.post("/v1/predict", json={"inputs": []}),
        lambda c: c.get("/metrics"),
    ]))
    assert refused.status_code == 429
    assert refused.headers["retry-after"] == str(RETRY_AFTER_S)
    assert refused.json()["error"]["code"] == "overloaded"
    assert "x-request-id" not in refused.headers
    assert not [r for r in caplog.records if getattr(r, "status", None) == 429]
    requests = _sample(metrics.text, "hetserve_http_requests", "hetserve_http_requests_total")
    assert not [s for s in requests if s.labels["status"] == "429"]
    (refusals,) = _sample(metrics.text, "hetserve_http_requests_refused",
                          "hetserve_http_requests_refused_total")
    assert refusals.value == 1
    (in_flight,) = _sample(metrics.text, "hetserve_http_requests_in_flight",
                           "hetserve_http_requests_in_flight")
    assert in_flight.value == MAX_IN_FLIGHT


def test_health_passes_a_full_gate_through_the_whole_middleware_stack(app):
    (health,) = asyncio.run(_with_full_gate(app, [lambda c: c.get("/healthz")]))
    assert health.status_code == 200
    assert health.headers["x-request-id"]
    assert app.state.admission.refused == 0


def test_every_refusal_gets_the_same_prebuilt_answer(app):
    answers = asyncio.run(_with_full_gate(app, [
        lambda c: c.post("/v1/predict", json={"inputs": []}),
        lambda c: c.post("/v1/models/x/predict", content=b"not json"),
    ]))
    assert [a.status_code for a in answers] == [429, 429]
    assert answers[0].content == answers[1].content
    assert f"{MAX_IN_FLIGHT} requests" in answers[0].json()["error"]["message"]
    assert app.state.admission.refused == 2
