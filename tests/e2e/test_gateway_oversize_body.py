"""An oversize body is answered 413 with the JSON error, not a connection reset, even for
clients that write the whole body before reading anything (``requests``, ``urllib``): the
gateway sends the 413 and keeps reading and discarding the body (bounded) before it closes.
Afterwards the gateway answers predictions as before."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from pathlib import Path

import pytest
import requests

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

LIMIT = 1024 * 1024
EXAMPLE = Path(__file__).resolve().parents[2] / "server/src/hetgateway/static/examples/6_shirt.png"
SIZES_MB = [8, 60]
CHUNK = 1024 * 1024


@pytest.fixture
def small_limit_gateway(triton_server, model_repository, launch_gateway):
    return launch_gateway(triton_server.grpc_url, wait_for="/readyz", max_body_bytes=LIMIT,
                          model_repositories=f'["{model_repository}"]')


def assert_413(status: int, body: bytes) -> None:
    assert status == 413
    assert json.loads(body)["error"]["code"] == "payload_too_large"


def predicts(url: str) -> None:
    with EXAMPLE.open("rb") as image:
        answer = requests.post(f"{url}/v1/predict", files={"images": image}, timeout=30)
    assert answer.status_code == 200, answer.text
    assert answer.json()["results"][0]["predictions"]


@pytest.mark.parametrize("size_mb", SIZES_MB)
def test_requests_reads_the_413_of_a_declared_oversize_body(small_limit_gateway, size_mb):
    body = b"{" + b" " * (size_mb * CHUNK)
    answer = requests.post(f"{small_limit_gateway}/v1/predict", data=body, timeout=60,
                           headers={"Content-Type": "application/json"})
    assert_413(answer.status_code, answer.content)
    predicts(small_limit_gateway)


@pytest.mark.parametrize("size_mb", SIZES_MB)
def test_urllib_reads_the_413_of_a_declared_oversize_body(small_limit_gateway, size_mb):
    request = urllib.request.Request(
        f"{small_limit_gateway}/v1/predict", data=b"x" * (size_mb * CHUNK), method="POST",
        headers={"Content-Type": "application/json"},
    )
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(request, timeout=60)
    assert_413(refused.value.code, refused.value.read())
    predicts(small_limit_gateway)


def test_requests_reads_the_413_of_a_streamed_oversize_body(small_limit_gateway):
    def chunks():  # no Content-Length: chunked transfer encoding, cut off by the gateway
        for _ in range(SIZES_MB[-1]):
            yield b"x" * CHUNK

    answer = requests.post(f"{small_limit_gateway}/v1/predict", data=chunks(), timeout=60,
                           headers={"Content-Type": "application/json"})
    assert_413(answer.status_code, answer.content)
    predicts(small_limit_gateway)
