"""Every caller mistake gets a clear 4xx in the ``{"error": {"code", "message"}}`` shape, and
the next good request is still answered right."""

from __future__ import annotations

import base64
import io
import socket
import struct
import zlib
from urllib.parse import urlsplit

import httpx
import numpy as np
import pytest
from PIL import Image

pytestmark = pytest.mark.e2e

DEFAULT_MAX_BODY_BYTES = 16 * 1024 * 1024
BOMB_SIDE = 100_000
"""A PNG header claiming 100000 x 100000 pixels (10^10, 40 GB as RGBA) in a few hundred bytes."""


def png_bytes(image: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG")
    return buffer.getvalue()


def with_png_size(data: bytes, *, width: int, height: int) -> bytes:
    """The same PNG with its IHDR chunk claiming another size (CRC fixed up)."""
    ihdr_start = 8 + 8  # signature, then length + type of the first chunk
    ihdr = bytearray(data[ihdr_start : ihdr_start + 13])
    ihdr[0:8] = struct.pack(">II", width, height)
    crc = struct.pack(">I", zlib.crc32(b"IHDR" + bytes(ihdr)) & 0xFFFFFFFF)
    return data[:ihdr_start] + bytes(ihdr) + crc + data[ihdr_start + 17 :]


def read_answer(sock: socket.socket) -> str:
    """Read one HTTP answer (head and a Content-Length body) from a raw socket."""
    data = b""
    while b"\r\n\r\n" not in data:
        data += sock.recv(4096)
    head, _, body = data.partition(b"\r\n\r\n")
    length = next(int(line.split(b":")[1]) for line in head.split(b"\r\n")
                  if line.lower().startswith(b"content-length:"))
    while len(body) < length:
        body += sock.recv(4096)
    return (head + b"\r\n\r\n" + body).decode("latin-1")


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


@pytest.fixture(scope="module")
def good(fashion_mnist) -> dict:
    return {"inputs": [{"image": b64(png_bytes(fashion_mnist.images[0]))}], "top_k": 1}


@pytest.fixture(scope="module")
def good_answer(gateway_url, good) -> dict:
    answer = httpx.post(f"{gateway_url}/v1/predict", json=good, timeout=30)
    assert answer.status_code == 200
    return answer.json()["results"]


def assert_error(answer: httpx.Response, status: int, code: str) -> None:
    assert answer.status_code == status, answer.text
    body = answer.json()
    assert set(body) == {"error"}
    assert body["error"]["code"] == code
    assert body["error"]["message"]
    assert "Traceback" not in answer.text


def assert_still_serving(url: str, good: dict, good_answer: list) -> None:
    answer = httpx.post(f"{url}/v1/predict", json=good, timeout=30)
    assert answer.status_code == 200
    assert answer.json()["results"] == good_answer


def huge_png() -> bytes:
    """A real, small file that decodes to 5000 x 5000 = 25 M pixels (over the 16 M limit)."""
    return png_bytes(np.zeros((5000, 5000), dtype=np.uint8))


def bad_requests(fashion_mnist) -> dict[str, tuple[dict, int, str]]:
    image = png_bytes(fashion_mnist.images[0])
    return {
        "not an image": (
            {"json": {"inputs": [{"image": b64(b"this is plain text, not a picture")}]}},
            415, "invalid_image"),
        "not base64": ({"json": {"inputs": [{"image": "%%% not base64 %%%"}]}},
                       415, "invalid_image"),
        "truncated PNG": ({"json": {"inputs": [{"image": b64(image[: len(image) // 2])}]}},
                          415, "invalid_image"),
        "empty body": ({"content": b""}, 400, "malformed_request"),
        "empty JSON body": ({"content": b"", "headers": {"content-type": "application/json"}},
                            400, "malformed_request"),
        "broken JSON": ({"content": b'{"inputs": [', "headers":
                         {"content-type": "application/json"}}, 400, "malformed_request"),
        "no inputs": ({"json": {"inputs": []}}, 422, "invalid_input"),
        "unknown field": ({"json": {"inputs": [{"picture": "x"}]}}, 422, "invalid_input"),
        "unsupported media type": ({"content": image, "headers": {"content-type": "image/png"}},
                                   415, "unsupported_media_type"),
        "decompression bomb": (
            {"json": {"inputs": [{"image": b64(with_png_size(image, width=BOMB_SIDE,
                                                               height=BOMB_SIDE))}]}},
            413, "payload_too_large"),
        "huge image": ({"json": {"inputs": [{"image": b64(huge_png())}]}},
                       413, "payload_too_large"),
        "wrong tensor shape": ({"json": {"inputs": [{"tensor": [[0.0] * 27] * 28}]}},
                               422, "invalid_input"),
        "ragged tensor": ({"json": {"inputs": [{"tensor": [[0.0] * 28] * 27 + [[0.0]]}]}},
                          422, "invalid_input"),
        "NaN in a tensor": ({"content": ('{"inputs": [{"tensor": [' + ",".join(
            ["[" + ",".join(["NaN"] + ["0.0"] * 27) + "]"] + ["[" + ",".join(["0.0"] * 28) + "]"]
            * 27) + "]}]}").encode(), "headers": {"content-type": "application/json"}},
            422, "invalid_input"),
        "infinity in a tensor": ({"json": {"inputs": [{"tensor": [[1e39] * 28] * 28}]}},
                                 422, "invalid_input"),
        "top_k zero": ({"json": {"inputs": [{"image": b64(image)}], "top_k": 0}},
                       422, "invalid_input"),
        "top_k above k_max": ({"json": {"inputs": [{"image": b64(image)}], "top_k": 10_000}},
                              422, "invalid_input"),
        "multipart without images": ({"files": {"other": ("x.png", image, "image/png")}},
                                     422, "invalid_input"),
        "multipart not an image": ({"files": {"images": ("x.png", b"GIF89a broken", "image/png")}},
                                   415, "invalid_image"),
        "batch over the limit": ({"json": {"inputs": [{"image": b64(image)}] * 65}},
                                 413, "payload_too_large"),
    }


CASES = [
    "not an image", "not base64", "truncated PNG", "empty body", "empty JSON body", "broken JSON",
    "no inputs", "unknown field", "unsupported media type", "decompression bomb", "huge image",
    "wrong tensor shape", "ragged tensor", "NaN in a tensor", "infinity in a tensor",
    "top_k zero", "top_k above k_max", "multipart without images", "multipart not an image",
    "batch over the limit",
]


@pytest.fixture(scope="module")
def bad_request_cases(fashion_mnist) -> dict[str, tuple[dict, int, str]]:
    """Every case of ``bad_requests``, built once for the module (one is a 5000 x 5000 PNG)."""
    return bad_requests(fashion_mnist)


@pytest.mark.parametrize("case", CASES)
def test_bad_input_gets_a_clear_4xx_and_the_next_request_is_answered_right(
    gateway_url, bad_request_cases, good, good_answer, case
):
    request, status, code = bad_request_cases[case]
    answer = httpx.post(f"{gateway_url}/v1/predict", timeout=30, **request)
    assert_error(answer, status, code)
    assert_still_serving(gateway_url, good, good_answer)


def test_unknown_model_is_404_and_names_the_served_models(gateway_url, good, good_answer,
                                                          model_cards):
    answer = httpx.post(f"{gateway_url}/v1/models/no_such_model/predict", json=good, timeout=30)
    assert_error(answer, 404, "model_not_found")
    assert all(name in answer.json()["error"]["message"] for name in model_cards)
    assert_error(httpx.get(f"{gateway_url}/v1/models/no_such_model", timeout=10),
                 404, "model_not_found")
    assert_still_serving(gateway_url, good, good_answer)


def test_unknown_route_and_wrong_method_answer_in_the_error_shape(gateway_url):
    assert_error(httpx.get(f"{gateway_url}/v2/nothing", timeout=10), 404, "not_found")
    assert_error(httpx.get(f"{gateway_url}/v1/predict", timeout=10), 405, "method_not_allowed")


def test_oversize_body_is_refused_from_its_content_length_before_it_is_sent(
    gateway_url, good, good_answer
):
    """Headers announce 1 GB; the gateway answers 413 having received none of it."""
    parts = urlsplit(gateway_url)
    with socket.create_connection((parts.hostname, parts.port), timeout=10) as sock:
        sock.sendall(
            b"POST /v1/predict HTTP/1.1\r\nHost: gateway\r\nContent-Type: application/json\r\n"
            b"Content-Length: 1000000000\r\n\r\n{\"inputs\": ["
        )
        head = read_answer(sock)
    assert head.startswith("HTTP/1.1 413"), head
    assert '"payload_too_large"' in head
    assert_still_serving(gateway_url, good, good_answer)


def test_oversize_chunked_body_is_refused_while_it_streams(gateway_url, good, good_answer):
    """No Content-Length: once the chunks pass the limit the gateway answers 413, although
    the body has not ended (its last chunk is never sent)."""
    parts = urlsplit(gateway_url)
    chunk = b"x" * (1024 * 1024)
    framed = f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n"
    with socket.create_connection((parts.hostname, parts.port), timeout=20) as sock:
        sock.sendall(
            b"POST /v1/predict HTTP/1.1\r\nHost: gateway\r\nContent-Type: application/json\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n"
        )
        for _ in range(DEFAULT_MAX_BODY_BYTES // len(chunk) + 1):
            sock.sendall(framed)
        head = read_answer(sock)
    assert head.startswith("HTTP/1.1 413"), head
    assert '"payload_too_large"' in head
    assert_still_serving(gateway_url, good, good_answer)


def test_triton_slower_than_the_client_timeout_gives_504(triton_server, launch_gateway, good):
    url = launch_gateway(triton_server.grpc_url, wait_for="/readyz", infer_timeout_s=1e-6)
    assert_error(httpx.post(f"{url}/v1/predict", json=good, timeout=30), 504, "backend_timeout")
