"""Request ids: accepted when sane, made otherwise, returned in X-Request-ID and in every log line
of the request; access logs name the route template, never the raw path or query."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator

import pytest
from fastapi import FastAPI, Request
from fastapi.testclient import TestClient
from hetgateway.logging_config import JsonFormatter, configure_logging
from hetgateway.request_context import (
    RequestContextMiddleware,
    accept_or_make_request_id,
    current_request_id,
)


def _client() -> TestClient:
    app = FastAPI()

    @app.get("/v1/models/{model}")
    async def model(model: str, request: Request) -> dict:
        logging.getLogger("hetgateway.test").info("handling", extra={"model": model})
        return {"state_id": request.state.request_id, "context_id": current_request_id()}

    app.add_middleware(RequestContextMiddleware)
    return TestClient(app)


@pytest.fixture()
def gateway_log() -> Iterator[io.StringIO]:
    """The gateway's log records, formatted as they are emitted (inside the request)."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    logger = logging.getLogger("hetgateway")
    saved_level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    yield stream
    logger.removeHandler(handler)
    logger.setLevel(saved_level)


def _json_lines(stream: io.StringIO) -> list[dict]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def test_an_id_is_made_returned_and_visible_to_the_handler() -> None:
    answer = _client().get("/v1/models/fashion_het")
    request_id = answer.headers["x-request-id"]
    assert len(request_id) == 32 and int(request_id, 16) >= 0
    assert answer.json() == {"state_id": request_id, "context_id": request_id}


@pytest.mark.parametrize("sane", ["abc-123", "trace:01HZX.9_z", "x" * 128])
def test_a_sane_caller_id_is_kept(sane: str) -> None:
    answer = _client().get("/v1/models/m", headers={"X-Request-ID": sane})
    assert answer.headers["x-request-id"] == sane
    assert answer.json()["state_id"] == sane


@pytest.mark.parametrize(
    "insane", ["", "has space", "x" * 129, "semi;colon", "new\tline", "caf\u00e9", "../../etc"]
)
def test_an_insane_caller_id_is_replaced(insane: str) -> None:
    assert accept_or_make_request_id(insane) != insane
    assert len(accept_or_make_request_id(insane)) == 32


def test_every_log_line_of_a_request_carries_its_id(gateway_log: io.StringIO) -> None:
    _client().get("/v1/models/fashion_het", headers={"X-Request-ID": "req-42"})
    lines = _json_lines(gateway_log)
    handler_line = next(line for line in lines if line["message"] == "handling")
    access_line = next(line for line in lines if line["logger"] == "hetgateway.access")
    assert handler_line["request_id"] == "req-42" and handler_line["model"] == "fashion_het"
    assert access_line["request_id"] == "req-42"
    assert access_line["status"] == 200 and access_line["method"] == "GET"
    assert access_line["duration_ms"] >= 0


def test_access_log_names_the_route_template_not_the_raw_path(gateway_log: io.StringIO) -> None:
    client = _client()
    client.get("/v1/models/secret-looking-name?token=abc")
    client.get("/no/such/path/" + "z" * 1000)
    access = [line for line in _json_lines(gateway_log) if line["logger"] == "hetgateway.access"]
    assert [line["route"] for line in access] == ["/v1/models/{model}", "<unmatched>"]
    text = json.dumps(access)
    assert "secret-looking-name" not in text and "token=abc" not in text and "zzzz" not in text


def test_configure_logging_writes_one_json_object_per_line(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    stream = io.StringIO()
    monkeypatch.setattr("sys.stderr", stream)
    root = logging.getLogger()
    saved_handlers, saved_level = root.handlers[:], root.level
    try:
        configure_logging(level="INFO")
        logging.getLogger("hetgateway").info("ready", extra={"models": 2})
        try:
            raise ValueError("boom")
        except ValueError:
            logging.getLogger("hetgateway").exception("failed")
    finally:
        root.handlers[:] = saved_handlers
        root.setLevel(saved_level)
    first, second = (json.loads(line) for line in stream.getvalue().splitlines())
    assert first["message"] == "ready" and first["models"] == 2 and first["level"] == "INFO"
    assert first["ts"].endswith("Z") and first["request_id"] is None
    assert second["level"] == "ERROR" and "ValueError: boom" in second["exception"]
