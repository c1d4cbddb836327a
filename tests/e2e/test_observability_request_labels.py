"""/metrics counts requests by route template, model and status; the model label is a served
model's name, the default model's for /v1/predict, "unknown" for anything else (never the raw
name a caller sent), and empty on routes that name no model."""

from __future__ import annotations

import base64
import io

import httpx
import pytest
from PIL import Image
from prometheus_client.parser import text_string_to_metric_families

pytestmark = pytest.mark.e2e

REQUESTS_METRIC = "hetserve_http_requests"
PREDICT_ROUTE = "/v1/models/{model}/predict"
ODD_MODEL_NAMES = ("no-such-model", "x" * 200, "fashion_het%00", "model.with.dots")


def _request_counts(gateway_url: str) -> dict[tuple[str, str, str, str], float]:
    """(method, route, model, status) -> count, from the gateway's /metrics."""
    text = httpx.get(f"{gateway_url}/metrics", timeout=10).text
    (family,) = [f for f in text_string_to_metric_families(text) if f.name == REQUESTS_METRIC]
    return {
        (s.labels["method"], s.labels["route"], s.labels["model"], s.labels["status"]): s.value
        for s in family.samples
        if s.name.endswith("_total")
    }


def _delta(before: dict, after: dict, key: tuple[str, str, str, str]) -> float:
    return after.get(key, 0.0) - before.get(key, 0.0)


def _png_body(image) -> dict:
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG")
    return {"inputs": [{"image": base64.b64encode(buffer.getvalue()).decode()}], "top_k": 1}


def test_predictions_are_counted_by_route_model_and_status(
    gateway_url, model_cards, fashion_mnist
):
    body = _png_body(fashion_mnist.images[0])
    default_model = httpx.get(f"{gateway_url}/v1/models", timeout=10).json()["default_model"]
    before = _request_counts(gateway_url)
    for name in model_cards:
        answer = httpx.post(f"{gateway_url}/v1/models/{name}/predict", json=body, timeout=30)
        assert answer.status_code == 200
    assert httpx.post(f"{gateway_url}/v1/predict", json=body, timeout=30).status_code == 200
    bad = httpx.post(f"{gateway_url}/v1/predict", json={"inputs": []}, timeout=30)
    after = _request_counts(gateway_url)

    for name in model_cards:
        assert _delta(before, after, ("POST", PREDICT_ROUTE, name, "200")) == 1
    assert _delta(before, after, ("POST", "/v1/predict", default_model, "200")) == 1
    assert _delta(before, after, ("POST", "/v1/predict", default_model,
                                  str(bad.status_code))) == 1


def test_unknown_model_names_share_one_label_and_never_reach_the_metrics(
    gateway_url, fashion_mnist
):
    body = _png_body(fashion_mnist.images[0])
    before = _request_counts(gateway_url)
    for name in ODD_MODEL_NAMES:
        answer = httpx.post(f"{gateway_url}/v1/models/{name}/predict", json=body, timeout=30)
        assert answer.status_code == 404
    after = _request_counts(gateway_url)

    assert _delta(before, after, ("POST", PREDICT_ROUTE, "unknown", "404")) == len(ODD_MODEL_NAMES)
    assert {key[2] for key in after} <= {"", "unknown", *_served(gateway_url)}
    text = httpx.get(f"{gateway_url}/metrics", timeout=10).text
    assert "no-such-model" not in text and "x" * 200 not in text


def test_routes_without_a_model_carry_an_empty_model_label(gateway_url):
    before = _request_counts(gateway_url)
    assert httpx.get(f"{gateway_url}/healthz", timeout=10).status_code == 200
    assert httpx.get(f"{gateway_url}/no/such/path", timeout=10).status_code == 404
    after = _request_counts(gateway_url)
    assert _delta(before, after, ("GET", "/healthz", "", "200")) == 1
    assert _delta(before, after, ("GET", "unmatched", "", "404")) == 1


def _served(gateway_url: str) -> set[str]:
    return {m["name"] for m in httpx.get(f"{gateway_url}/v1/models", timeout=10).json()["models"]}
