"""Every endpoint of the gateway answers per the API contract (ARCHITECTURE.md)."""

from __future__ import annotations

import base64
import io
import re

import httpx
import pytest
from hetcontract import ModelDetail, ModelList
from PIL import Image

pytestmark = pytest.mark.e2e


def test_healthz_says_the_process_is_alive(gateway_url):
    answer = httpx.get(f"{gateway_url}/healthz", timeout=10)
    assert answer.status_code == 200
    assert answer.json() == {"status": "ok"}


def test_readyz_reports_triton_and_every_model_ready(gateway_url, model_cards):
    answer = httpx.get(f"{gateway_url}/readyz", timeout=10)
    assert answer.status_code == 200
    assert answer.json()["models"] == {name: True for name in model_cards}
    assert (answer.json()["replicas_ready"], answer.json()["replicas"]) == (1, 1)


def test_models_lists_every_served_model_with_its_labels(gateway_url, model_cards):
    answer = httpx.get(f"{gateway_url}/v1/models", timeout=10)
    listing = ModelList.model_validate_json(answer.content)
    assert {m.name for m in listing.models} == set(model_cards)
    assert listing.default_model in model_cards
    for model in listing.models:
        card = model_cards[model.name]
        assert model.ready
        assert model.labels == card.labels
        assert model.num_classes == card.num_classes
        assert model.head == card.head


def test_model_detail_carries_the_whole_model_card(gateway_url, model_cards):
    for name, card in model_cards.items():
        answer = httpx.get(f"{gateway_url}/v1/models/{name}", timeout=10)
        assert answer.status_code == 200
        detail = ModelDetail.model_validate_json(answer.content)
        assert detail.name == name
        assert detail.model_card == card.model_dump(mode="json")


def test_metrics_exposes_prometheus_counters_of_answered_requests(gateway_url, fashion_mnist):
    buffer = io.BytesIO()
    Image.fromarray(fashion_mnist.images[0]).save(buffer, format="PNG")
    body = {"inputs": [{"image": base64.b64encode(buffer.getvalue()).decode()}], "top_k": 1}
    assert httpx.post(f"{gateway_url}/v1/predict", json=body, timeout=30).status_code == 200
    answer = httpx.get(f"{gateway_url}/metrics", timeout=10)
    assert answer.status_code == 200
    assert answer.headers["content-type"].startswith("text/plain")
    text = answer.text
    assert re.search(
        r'hetserve_http_requests_total\{method="POST",model="\w+",route="/v1/predict",'
        r'status="200"\}', text
    )
    assert "hetserve_triton_request_duration_seconds_bucket" in text


def test_openapi_document_and_docs_page_describe_every_route(gateway_url):
    document = httpx.get(f"{gateway_url}/openapi.json", timeout=10).json()
    assert {"/healthz", "/readyz", "/v1/models", "/v1/models/{model}",
            "/v1/models/{model}/predict", "/v1/predict", "/metrics"} <= set(document["paths"])
    body = document["paths"]["/v1/predict"]["post"]["requestBody"]["content"]
    assert {"application/json", "multipart/form-data"} <= set(body)
    assert "PredictRequest" in document["components"]["schemas"]
    assert "PredictResponse" in document["components"]["schemas"]
    docs = httpx.get(f"{gateway_url}/docs", timeout=10)
    assert docs.status_code == 200 and "swagger" in docs.text.lower()


def test_every_answer_carries_a_request_id_and_echoes_a_sane_one(gateway_url):
    answer = httpx.get(f"{gateway_url}/healthz", headers={"x-request-id": "trace-42"}, timeout=10)
    assert answer.headers["x-request-id"] == "trace-42"
    assert httpx.get(f"{gateway_url}/healthz", timeout=10).headers["x-request-id"]
