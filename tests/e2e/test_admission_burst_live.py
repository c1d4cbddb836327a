"""The admission gate under a real burst: a gateway process in front of the real embedded
Triton, allowed ``MAX_IN_FLIGHT`` API requests at once, gets ``BURST`` requests sent at the
same moment over separate connections.

Specification: every request is answered, either 200 with the prediction or 429 with
``Retry-After`` and the standard error body (code ``overloaded``); nothing else (no 5xx, no
timeout, no reset connection). The burst is larger than the bound and each request takes a
whole model call, so some are refused and at least the bound's worth admitted; the gateway's
refusal counter (``/metrics``) counts exactly the 429s the clients saw; health answers during
the burst; and once it is over the gateway admits again.
"""

from __future__ import annotations

import asyncio
import base64
import io
import re

import httpx
import pytest
from PIL import Image

pytestmark = pytest.mark.e2e

MAX_IN_FLIGHT = 2
BURST = 32
IMAGES_PER_REQUEST = 16
TIMEOUT_S = 60.0
REFUSED_METRIC = re.compile(r"^hetserve_http_requests_refused_total(?:\{[^}]*\})? (\S+)$",
                            re.MULTILINE)


def refused_total(url: str) -> float:
    text = httpx.get(f"{url}/metrics", timeout=TIMEOUT_S).text
    return sum(float(value) for value in REFUSED_METRIC.findall(text))


async def burst(url: str, body: dict) -> tuple[list[httpx.Response], list[int]]:
    """``BURST`` predictions released together (one connection each), and the health
    statuses seen while they run."""
    start = asyncio.Event()
    limits = httpx.Limits(max_connections=BURST + 1, max_keepalive_connections=0)
    async with httpx.AsyncClient(base_url=url, timeout=TIMEOUT_S, limits=limits) as client:

        async def one() -> httpx.Response:
            await start.wait()
            return await client.post("/v1/models/fashion_het/predict", json=body)

        async def health() -> list[int]:
            await start.wait()
            await asyncio.sleep(0.05)
            return [(await client.get("/healthz")).status_code for _ in range(3)]

        tasks = [asyncio.create_task(one()) for _ in range(BURST)]
        checker = asyncio.create_task(health())
        await asyncio.sleep(0.2)  # every task is waiting on the event
        start.set()
        return list(await asyncio.gather(*tasks)), await checker


def test_a_burst_beyond_the_bound_is_answered_200_or_fast_429_and_counted(
    triton_server, launch_gateway, fashion_mnist
):
    def png(index: int) -> str:
        buffer = io.BytesIO()
        Image.fromarray(fashion_mnist.images[index]).save(buffer, format="PNG")
        return base64.b64encode(buffer.getvalue()).decode()

    body = {"inputs": [{"image": png(i)} for i in range(IMAGES_PER_REQUEST)], "top_k": 3}
    url = launch_gateway(
        triton_server.grpc_url, wait_for="/readyz", max_in_flight=MAX_IN_FLIGHT,
        model_repositories=f'["{triton_server.source_repositories[0]}"]',
    )
    before = refused_total(url)

    answers, health = asyncio.run(burst(url, body))

    statuses = [answer.status_code for answer in answers]
    assert set(statuses) <= {200, 429}, statuses
    admitted = [a for a in answers if a.status_code == 200]
    refused = [a for a in answers if a.status_code == 429]
    assert len(admitted) >= MAX_IN_FLIGHT and refused, statuses
    for answer in admitted:
        assert len(answer.json()["results"]) == IMAGES_PER_REQUEST
    for answer in refused:
        assert int(answer.headers["Retry-After"]) >= 1
        assert answer.json()["error"]["code"] == "overloaded"
    assert health == [200, 200, 200], "health is never refused"
    assert refused_total(url) - before == len(refused)
    after = httpx.post(f"{url}/v1/models/fashion_het/predict", json=body, timeout=TIMEOUT_S)
    assert after.status_code == 200, "the gate admits again once the burst is over"
