"""Hostile input against the live gateway: each gets a clear 4xx (or, for a stalled client, a
408 or a closed connection) in bounded time, and the gateway keeps serving good requests."""

from __future__ import annotations

import base64
import io
import socket
import time
from collections.abc import Callable
from urllib.parse import urlsplit

import httpx
import numpy as np
import pytest
from PIL import Image

pytestmark = [pytest.mark.e2e]

ANSWER_BOUND_S = 5.0
CLIENT_ERRORS = {400, 404, 405, 408, 413, 415, 422}
BOMB_SIDE = 30_000
SLOW_BODY_TIMEOUT_S = 1.0


def _png_b64(image: Image.Image) -> str:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", optimize=True)
    return base64.b64encode(buffer.getvalue()).decode()


@pytest.fixture(scope="module")
def good_body(fashion_mnist) -> dict:
    return {"inputs": [{"image": _png_b64(Image.fromarray(fashion_mnist.images[0]))}], "top_k": 1}


@pytest.fixture(scope="module")
def predict_url(gateway_url: str, model_cards: dict) -> str:
    return f"{gateway_url}/v1/models/{sorted(model_cards)[0]}/predict"


def _assert_clear_refusal(answer: httpx.Response, elapsed_s: float) -> None:
    assert answer.status_code in CLIENT_ERRORS, (answer.status_code, answer.text[:300])
    assert set(answer.json()["error"]) == {"code", "message"}
    assert "Traceback" not in answer.text
    assert elapsed_s < ANSWER_BOUND_S


def _timed(send: Callable[[], httpx.Response]) -> tuple[httpx.Response, float]:
    started = time.monotonic()
    answer = send()
    return answer, time.monotonic() - started


@pytest.fixture(autouse=True)
def _still_serving_afterwards(predict_url: str, good_body: dict):
    yield
    assert httpx.post(predict_url, json=good_body, timeout=30).status_code == 200


def _bomb_png() -> str:
    """A 30000 x 30000 grey PNG (900 megapixels) that compresses to about a megabyte."""
    return _png_b64(Image.new("L", (BOMB_SIDE, BOMB_SIDE), 0))


@pytest.mark.parametrize(
    "image_b64",
    [
        pytest.param(_bomb_png, id="decompression-bomb"),
        pytest.param(lambda: _png_b64(Image.new("L", (20_000, 1_000))), id="huge-dimensions"),
        pytest.param(lambda: base64.b64encode(b"\x89PNG\r\n\x1a\n" + b"\0" * 64).decode(),
                     id="truncated-png"),
        pytest.param(lambda: "not base64 at all!!", id="not-base64"),
    ],
)
def test_hostile_images_are_refused_with_a_clear_4xx(
    predict_url: str, image_b64: Callable[[], str]
) -> None:
    body = {"inputs": [{"image": image_b64()}]}
    answer, elapsed = _timed(lambda: httpx.post(predict_url, json=body, timeout=30))
    _assert_clear_refusal(answer, elapsed)


@pytest.mark.parametrize(
    "content",
    [
        pytest.param(b"[" * 200_000 + b"]" * 200_000, id="deeply-nested-array"),
        pytest.param(b'{"inputs": ' + b'{"a": ' * 50_000 + b"1" + b"}" * 50_000 + b"}",
                     id="deeply-nested-object"),
        pytest.param(b'{"inputs": [' + b",".join([b'{"tensor": [0]}'] * 20_000) + b"]}",
                     id="too-many-inputs"),
        pytest.param(b'{"inputs": [{"tensor": ' + str(np.zeros((1, 900, 900)).tolist())
                     .encode() + b"}]}", id="huge-tensor-dimensions"),
        pytest.param(b'{"inputs": [{"tensor": [[NaN]]}]}', id="nan-literal"),
        pytest.param(b'{"inputs": [{"image": "' + b"A" * 1000 + b'"', id="truncated-json"),
    ],
)
def test_hostile_json_is_refused_with_a_clear_4xx(predict_url: str, content: bytes) -> None:
    answer, elapsed = _timed(lambda: httpx.post(
        predict_url, content=content, headers={"Content-Type": "application/json"}, timeout=30))
    _assert_clear_refusal(answer, elapsed)


@pytest.mark.parametrize(
    ("content_type", "content"),
    [
        pytest.param("multipart/form-data", b"--x\r\n\r\n", id="no-boundary"),
        pytest.param("multipart/form-data; boundary=xyz",
                     b'--xyz\r\nContent-Disposition: form-data; name="images"; '
                     b'filename="a.png"\r\n\r\n\x89PNG', id="unterminated-part"),
        pytest.param("multipart/form-data; boundary=xyz", b"garbage without parts",
                     id="garbage"),
        pytest.param("multipart/form-data; boundary=xyz",
                     b'--xyz\r\nContent-Disposition: form-data; name="other"\r\n\r\n1\r\n'
                     b"--xyz--\r\n", id="no-images-field"),
    ],
)
def test_malformed_multipart_is_refused_with_a_clear_4xx(
    predict_url: str, content_type: str, content: bytes
) -> None:
    answer, elapsed = _timed(lambda: httpx.post(
        predict_url, content=content, headers={"Content-Type": content_type}, timeout=30))
    _assert_clear_refusal(answer, elapsed)


@pytest.mark.parametrize(
    "model",
    ["..%2F..%2Fetc%2Fpasswd", "%2e%2e", "fashion_het%00", "%E6%A8%A1%E5%9E%8B", "x" * 8000,
     "fashion_het%2F..%2Ffashion_det", "%20"],
    ids=["traversal", "dot-dot", "nul", "unicode", "very-long", "slash-traversal", "space"],
)
def test_odd_model_names_get_404_or_422(gateway_url: str, model: str, good_body: dict) -> None:
    answer, elapsed = _timed(lambda: httpx.post(
        f"{gateway_url}/v1/models/{model}/predict", json=good_body, timeout=30))
    assert answer.status_code in {404, 422}, (answer.status_code, answer.text[:200])
    assert elapsed < ANSWER_BOUND_S
    assert "root:" not in answer.text


@pytest.mark.parametrize(
    ("method", "path"),
    [("GET", "/v2/repository/index"), ("POST", "/v2/repository/index"),
     ("POST", "/v2/repository/models/fashion_het/unload"),
     ("POST", "/v2/repository/models/fashion_het/load"),
     ("GET", "/v2/systemsharedmemory/status"), ("POST", "/v2/cudasharedmemory/region/x/register"),
     ("GET", "/v2/models/fashion_het/config")],
)
def test_triton_model_control_and_shared_memory_are_not_reachable(
    gateway_url: str, method: str, path: str
) -> None:
    answer = httpx.request(method, gateway_url + path, timeout=10)
    assert answer.status_code in {404, 405}


def _raw_http(url: str, head: bytes, body_chunks: list[bytes], *, pause_s: float = 0.0,
              read_timeout_s: float = ANSWER_BOUND_S) -> tuple[bytes, float]:
    """Send ``head`` and the chunks (pausing between them) on a raw socket; returns what the
    server answered (b"" when it closed the connection without answering) and the time."""
    parts = urlsplit(url)
    started = time.monotonic()
    with socket.create_connection((parts.hostname, parts.port), timeout=read_timeout_s) as sock:
        sock.sendall(head)
        try:
            for chunk in body_chunks:
                sock.sendall(chunk)
                time.sleep(pause_s)
        except (BrokenPipeError, ConnectionResetError):
            pass
        try:
            answer = sock.recv(65536)
        except (ConnectionResetError, TimeoutError):
            answer = b""
    return answer, time.monotonic() - started


def test_oversize_body_is_refused_from_its_declared_length_before_it_is_sent(
    predict_url: str,
) -> None:
    path = urlsplit(predict_url).path
    head = (f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            f"Content-Length: {10**10}\r\n\r\n").encode()
    answer, elapsed = _raw_http(predict_url, head, [b"{"])
    assert answer.startswith(b"HTTP/1.1 413"), answer[:200]
    assert elapsed < ANSWER_BOUND_S


def test_oversize_chunked_body_is_refused_while_it_is_still_being_sent(predict_url: str) -> None:
    """No Content-Length: the gateway counts the chunks and answers 413 once past its limit
    (16 MiB), without waiting for a body that, here, never ends."""
    megabyte = b"A" * (1024 * 1024)
    chunk = f"{len(megabyte):x}\r\n".encode() + megabyte + b"\r\n"
    head = (f"POST {urlsplit(predict_url).path} HTTP/1.1\r\nHost: x\r\n"
            "Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n").encode()
    answer, elapsed = _raw_http(predict_url, head, [chunk] * 20)
    assert answer.startswith(b"HTTP/1.1 413"), answer[:200]
    assert elapsed < ANSWER_BOUND_S * 2


def test_a_stalled_body_gets_408_or_a_closed_connection_in_bounded_time(
    triton_server, launch_gateway: Callable, model_cards: dict
) -> None:
    gateway = launch_gateway(triton_server.grpc_url, body_read_timeout_s=SLOW_BODY_TIMEOUT_S)
    url = f"{gateway}/v1/models/{sorted(model_cards)[0]}/predict"
    head = (f"POST {urlsplit(url).path} HTTP/1.1\r\nHost: x\r\n"
            "Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n").encode()
    answer, elapsed = _raw_http(url, head, [b"{"] * 6, pause_s=0.5)
    assert answer == b"" or answer.startswith(b"HTTP/1.1 408"), answer[:200]
    assert elapsed < SLOW_BODY_TIMEOUT_S + ANSWER_BOUND_S


def test_slow_header_connections_do_not_stop_others_being_served(
    gateway_url: str, predict_url: str, good_body: dict
) -> None:
    parts = urlsplit(gateway_url)
    idle = [socket.create_connection((parts.hostname, parts.port), timeout=5) for _ in range(50)]
    try:
        for sock in idle:
            sock.sendall(b"POST /v1/predict HTTP/1.1\r\nHost: x\r\nX-Slow: ")
        answer, elapsed = _timed(lambda: httpx.post(predict_url, json=good_body, timeout=30))
        assert answer.status_code == 200 and elapsed < ANSWER_BOUND_S
    finally:
        for sock in idle:
            sock.close()
