"""Errors become answers in one place: one status and code per domain error, the same
``{"error": {"code", "message"}}`` shape for FastAPI's and Starlette's own errors, 503 with
Retry-After while Triton is unreachable, and never a traceback."""

from __future__ import annotations

import socket

import pytest
from fastapi.testclient import TestClient
from hetgateway import create_app, load_settings
from hetgateway.errors import (
    BackendError,
    BackendTimeout,
    BackendUnavailable,
    GatewayError,
    InvalidImage,
    InvalidInput,
    MalformedRequest,
    ModelNotFound,
    ModelNotReady,
    PayloadTooLarge,
    UnsupportedMediaType,
)
from hetgateway.http_errors import INTERNAL_ERROR, error_response, http_error_for

RETRY_AFTER_S = 3


@pytest.mark.parametrize(
    ("error", "status", "code"),
    [
        (MalformedRequest, 400, "malformed_request"),
        (ModelNotFound, 404, "model_not_found"),
        (PayloadTooLarge, 413, "payload_too_large"),
        (InvalidImage, 415, "invalid_image"),
        (UnsupportedMediaType, 415, "unsupported_media_type"),
        (InvalidInput, 422, "invalid_input"),
        (BackendError, 502, "backend_error"),
        (ModelNotReady, 503, "model_not_ready"),
        (BackendUnavailable, 503, "backend_unavailable"),
        (BackendTimeout, 504, "backend_timeout"),
    ],
)
def test_each_domain_error_maps_to_one_status_and_code(error, status, code):
    mapped = http_error_for(error("details"))
    assert (mapped.status, mapped.code) == (status, code)
    response = error_response(error("details"), retry_after_s=RETRY_AFTER_S)
    assert response.status_code == status
    assert response.body == f'{{"error":{{"code":"{code}","message":"details"}}}}'.encode()
    assert (response.headers.get("retry-after") == str(RETRY_AFTER_S)) == (status == 503)


def test_an_unlisted_error_is_a_500_without_details_of_the_class():
    class Surprise(GatewayError):
        pass

    assert http_error_for(Surprise("x")) == INTERNAL_ERROR


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def client_without_triton():
    settings = load_settings(triton_grpc_url=f"127.0.0.1:{closed_port()}",
                             retry_after_s=RETRY_AFTER_S, max_body_bytes=1000)
    with TestClient(create_app(settings), raise_server_exceptions=False) as client:
        yield client


def assert_error(answer, status: int, code: str) -> None:
    assert answer.status_code == status, answer.text
    assert answer.json()["error"]["code"] == code
    assert "Traceback" not in answer.text


def test_triton_unreachable_gives_503_with_retry_after(client_without_triton):
    for answer in (
        client_without_triton.get("/readyz"),
        client_without_triton.get("/v1/models"),
        client_without_triton.post("/v1/predict", json={"inputs": [{"image": "AAAA"}]}),
    ):
        assert_error(answer, 503, "backend_unavailable")
        assert answer.headers["retry-after"] == str(RETRY_AFTER_S)
    assert client_without_triton.get("/healthz").status_code == 200


def test_request_mistakes_are_caught_before_triton_is_asked(client_without_triton):
    client = client_without_triton
    assert_error(client.post("/v1/predict", content=b""), 400, "malformed_request")
    assert_error(client.post("/v1/predict", content=b"{", headers={"content-type":
                 "application/json"}), 400, "malformed_request")
    assert_error(client.post("/v1/predict", json={"inputs": []}), 422, "invalid_input")
    assert_error(client.post("/v1/predict", json={"inputs": [{"image": "A"}], "top_k": 0}),
                 422, "invalid_input")
    assert_error(client.post("/v1/predict", content=b"x", headers={"content-type":
                 "text/plain"}), 415, "unsupported_media_type")
    assert_error(client.post("/v1/predict", content=b"x" * 1001, headers={"content-type":
                 "application/json"}), 413, "payload_too_large")


def test_unknown_routes_and_methods_answer_in_the_error_shape(client_without_triton):
    assert_error(client_without_triton.get("/nowhere"), 404, "not_found")
    assert_error(client_without_triton.get("/v1/predict"), 405, "method_not_allowed")


def test_every_app_has_its_own_metrics_registry():
    first, second = create_app(load_settings()), create_app(load_settings())
    assert first.state.metrics.registry is not second.state.metrics.registry
