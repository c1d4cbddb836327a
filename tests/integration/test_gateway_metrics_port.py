"""``HETSERVE_METRICS_PORT``: the gateway serves ``/metrics`` on a port of its own, without API
keys, and no longer on its public port; with several workers the parent serves the sum of every
worker's counts there. Real ``hetgateway gateway`` processes on loopback (no Triton needed:
``/healthz`` requests are what is counted)."""

from __future__ import annotations

import socket
import urllib.error
import urllib.request

import pytest
from prometheus_client.parser import text_string_to_metric_families

pytestmark = pytest.mark.slow

API_KEY = "metrics-port-test-key"
REQUESTS = 12
UNREACHABLE_TRITON = "127.0.0.1:1"  # the gateway starts without Triton; /healthz needs none


def get(url: str, *, key: str | None = None) -> tuple[int, str, str]:
    """(status, content type, body) of a GET on a new connection; HTTP errors included."""
    request = urllib.request.Request(url, headers={"X-API-Key": key} if key else {})
    try:
        with urllib.request.urlopen(request, timeout=10) as answer:
            return answer.status, answer.headers["Content-Type"], answer.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.headers["Content-Type"], error.read().decode()


def healthz_count(metrics_text: str) -> float:
    return sum(
        sample.value
        for family in text_string_to_metric_families(metrics_text)
        if family.name == "hetserve_http_requests"
        for sample in family.samples
        if sample.name == "hetserve_http_requests_total"
        and sample.labels["route"] == "/healthz" and sample.labels["status"] == "200"
    )


def refused(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) != 0


@pytest.mark.parametrize("workers", [1, 2], ids=["one-process", "two-workers"])
def test_metrics_are_served_on_their_own_port_without_a_key_and_not_on_the_public_port(
    launch_gateway_process, unused_port, workers
):
    metrics_port = unused_port()
    gateway = launch_gateway_process(UNREACHABLE_TRITON, workers=workers,
                                     metrics_port=metrics_port, api_keys=API_KEY)
    metrics_url = f"http://127.0.0.1:{metrics_port}/metrics"

    assert get(f"{gateway.url}/v1/models")[0] == 401  # API keys are on
    assert get(f"{gateway.url}/metrics")[0] == 404
    assert get(f"{gateway.url}/metrics", key=API_KEY)[0] == 404
    assert "/metrics" not in get(f"{gateway.url}/openapi.json")[2]

    status, content_type, before = get(metrics_url)  # no key
    assert status == 200 and content_type.startswith("text/plain"), (status, content_type)
    for _ in range(REQUESTS):  # each on a new connection: any worker may answer
        assert get(f"{gateway.url}/healthz")[0] == 200
    after = get(metrics_url)[2]
    assert healthz_count(after) - healthz_count(before) == REQUESTS
    assert "hetserve_http_requests_in_flight" in after


def test_the_metrics_port_closes_with_the_gateway(launch_gateway_process, unused_port):
    metrics_port = unused_port()
    gateway = launch_gateway_process(UNREACHABLE_TRITON, workers=2, metrics_port=metrics_port)
    assert get(f"http://127.0.0.1:{metrics_port}/metrics")[0] == 200
    gateway.stop()
    assert refused(metrics_port)


def test_without_a_metrics_port_the_public_port_serves_metrics_as_before(
    launch_gateway_process,
):
    gateway = launch_gateway_process(UNREACHABLE_TRITON)
    status, content_type, text = get(f"{gateway.url}/metrics")
    assert status == 200 and content_type.startswith("text/plain")
    assert healthz_count(text) >= 1  # the launcher's own readiness polls
