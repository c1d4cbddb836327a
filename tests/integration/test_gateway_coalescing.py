"""Coalescing through the real Triton: concurrent requests of mixed sizes for both shipped
models, merged into fewer Triton calls, get answers bit-identical to those of a gateway that
sends every request alone; the metrics count requests, not calls."""

from __future__ import annotations

import asyncio
import base64
import io
import re

import httpx
import numpy as np
import pytest
from PIL import Image

pytestmark = pytest.mark.integration

SIZES = (1, 2, 3, 5, 1, 8, 1, 4)
ROUNDS = 4
PREDICT_ROUTE = "/v1/models/{model}/predict"


def png(image: np.ndarray) -> str:
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode()


def requests_to_send(images: np.ndarray, models: list[str]) -> list[tuple[str, dict]]:
    """(model, JSON body) pairs: every size in ``SIZES`` for every model, ``ROUNDS`` times,
    each request with images of its own."""
    bodies, start = [], 0
    for _ in range(ROUNDS):
        for model in models:
            for size in SIZES:
                chosen = images[start : start + size]
                start += size
                bodies.append((model, {"inputs": [{"image": png(i)} for i in chosen],
                                       "top_k": 3}))
    return bodies


def answer(url: str, model: str, body: dict) -> dict:
    reply = httpx.post(url + PREDICT_ROUTE.format(model=model), json=body, timeout=60)
    assert reply.status_code == 200, reply.text
    return {key: value for key, value in reply.json().items() if key != "request_id"}


async def answers_at_once(url: str, sent: list[tuple[str, dict]]) -> list[dict]:
    """Every request of ``sent`` in flight at once (a connection each), answers in order."""
    limits = httpx.Limits(max_connections=len(sent))
    async with httpx.AsyncClient(timeout=60, limits=limits) as client:
        replies = await asyncio.gather(*(
            client.post(url + PREDICT_ROUTE.format(model=model), json=body)
            for model, body in sent))
    assert all(reply.status_code == 200 for reply in replies), [r.text for r in replies]
    return [{key: value for key, value in reply.json().items() if key != "request_id"}
            for reply in replies]


def metric(text: str, name: str, model: str) -> float:
    found = re.search(rf'^{name}{{model="{model}"}} (\S+)$', text, re.MULTILINE)
    return float(found.group(1)) if found else 0.0


def test_coalesced_answers_equal_lone_answers_bit_for_bit(
    triton_server, launch_gateway, fashion_mnist, model_cards
):
    models = sorted(model_cards)
    merging = launch_gateway(triton_server.grpc_url, wait_for="/readyz",
                             triton_calls_per_replica=1)
    alone = launch_gateway(triton_server.grpc_url, wait_for="/readyz", coalesce="false")
    sent = requests_to_send(fashion_mnist.images, models)

    merged = asyncio.run(answers_at_once(merging, sent))
    lone = [answer(alone, model, body) for model, body in sent]  # one at a time

    assert merged == lone  # JSON floats print every bit: equal text, equal numbers
    metrics = httpx.get(f"{merging}/metrics", timeout=10).text
    for model in models:
        requests = sum(1 for name, _ in sent if name == model)
        calls = metric(metrics, "hetserve_triton_call_requests_count", model)
        assert metric(metrics, "hetserve_triton_call_requests_sum", model) == requests
        assert metric(metrics, "hetserve_triton_call_batch_size_sum", model) == \
            ROUNDS * sum(SIZES)
        assert calls < requests, "concurrent requests were merged into fewer calls"
        counted = re.findall(
            rf'^hetserve_http_requests_total{{method="POST",model="{model}",'
            rf'route="{re.escape(PREDICT_ROUTE)}",status="200"}} (\S+)$', metrics, re.MULTILINE)
        assert counted and float(counted[0]) == requests, "metrics count requests, not calls"
