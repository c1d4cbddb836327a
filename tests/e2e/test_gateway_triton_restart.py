"""Triton stopped under a running gateway: 503 with Retry-After within a second; Triton back
on the same ports: the gateway serves again without a restart."""

from __future__ import annotations

import base64
import io
import time

import httpx
import pytest
from PIL import Image

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

DOWN_ANSWER_WITHIN_S = 1.0
BACK_WITHIN_S = 30.0


def test_gateway_answers_503_while_triton_is_down_and_serves_again_when_it_is_back(
    launch_triton, launch_gateway, fashion_mnist
):
    triton = launch_triton()
    url = launch_gateway(triton.grpc_url, wait_for="/readyz")
    buffer = io.BytesIO()
    Image.fromarray(fashion_mnist.images[0]).save(buffer, format="PNG")
    body = {"inputs": [{"image": base64.b64encode(buffer.getvalue()).decode()}], "top_k": 2}
    before = httpx.post(f"{url}/v1/predict", json=body, timeout=30)
    assert before.status_code == 200

    triton.stop()
    for path, method in (("/v1/predict", "POST"), ("/readyz", "GET")):
        started = time.monotonic()
        answer = httpx.request(method, f"{url}{path}", json=body if method == "POST" else None,
                               timeout=10)
        elapsed = time.monotonic() - started
        assert answer.status_code == 503, (path, answer.text)
        assert answer.headers["retry-after"]
        assert answer.json()["error"]["code"] in {"backend_unavailable", "model_not_ready"}
        assert elapsed < DOWN_ANSWER_WITHIN_S, (path, elapsed)
    assert httpx.get(f"{url}/healthz", timeout=10).status_code == 200
    listing = httpx.get(f"{url}/v1/models", timeout=10)
    assert listing.status_code == 200  # the models stay known, marked not ready
    assert not any(model["ready"] for model in listing.json()["models"])

    triton.start()
    deadline = time.monotonic() + BACK_WITHIN_S
    while True:
        answer = httpx.post(f"{url}/v1/predict", json=body, timeout=30)
        if answer.status_code == 200 or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert answer.status_code == 200, answer.text
    assert answer.json()["results"] == before.json()["results"]
    assert httpx.get(f"{url}/readyz", timeout=10).status_code == 200


def test_gateway_started_before_triton_discovers_the_models_once_triton_is_up(
    launch_triton, launch_gateway, fashion_mnist, model_cards
):
    """Models are discovered lazily when Triton was unreachable at the gateway's start."""
    triton = launch_triton()
    triton.stop()
    url = launch_gateway(triton.grpc_url, wait_for="/healthz")
    assert httpx.get(f"{url}/readyz", timeout=10).status_code == 503
    assert httpx.get(f"{url}/v1/models", timeout=10).status_code == 503
    triton.start()
    deadline = time.monotonic() + BACK_WITHIN_S
    while httpx.get(f"{url}/readyz", timeout=10).status_code != 200:
        assert time.monotonic() < deadline, "gateway never became ready"
        time.sleep(0.1)
    names = {m["name"] for m in httpx.get(f"{url}/v1/models", timeout=10).json()["models"]}
    assert names == set(model_cards)
